//! OpenAI's tokenizers, for the counts tailor makes itself: `dataset check` (training is billed by
//! tokens × epochs), `simulate`, and the estimate of a stream that ended before its usage arrived
//! (client hang-up, upstream break). Upstream usage, when it comes, is always what is billed.
//!
//! - [`Encoding`]: which of OpenAI's encodings a model uses (o200k_base, cl100k_base), by name.
//! - [`chat`]: a request's prompt tokens with OpenAI's per-message and per-tool overheads.
//! - [`stream`]: the generated text of a stream counted as it passes, in bounded memory.
//!
//! The encoders (bpe-openai's, see Cargo.toml for why that crate) take ~50 ms and ~33 MiB of heap
//! to load (o200k_base, release build; `cargo bench --bench tokens`), so they load once, lazily: the offline tools load them when they first
//! count; `serve` loads the ones its models need on a background thread at start
//! ([`load_in_background`], [`Encoding::load`]), and the request path only uses an encoder that is already loaded
//! ([`Encoding::loaded`]), falling back to bytes / 4 in the moments before it is.

pub mod chat;
pub mod stream;

use std::sync::OnceLock;

use bpe_openai::Tokenizer;

/// One of OpenAI's byte-pair encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series, and their fine-tunes.
    O200kBase,
    /// GPT-4, GPT-3.5 Turbo, the text-embedding-3 and ada-002 embeddings, and their fine-tunes.
    Cl100kBase,
}

/// Model-name prefixes and their encodings, most specific first (`gpt-4o` before `gpt-4`), as
/// tiktoken's `encoding_for_model` maps them. Azure deployments of these models (`gpt-35-turbo`)
/// included.
const PREFIXES: [(&str, Encoding); 20] = [
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("gpt-oss", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    ("codex-", Encoding::O200kBase),
    ("computer-use", Encoding::O200kBase),
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5-turbo", Encoding::Cl100kBase),
    ("gpt-35-turbo", Encoding::Cl100kBase),
    ("text-embedding-3", Encoding::Cl100kBase),
    ("text-embedding-ada-002", Encoding::Cl100kBase),
    ("davinci-002", Encoding::Cl100kBase),
    ("babbage-002", Encoding::Cl100kBase),
    ("text-davinci-003", Encoding::Cl100kBase),
    ("text-davinci-002", Encoding::Cl100kBase),
];

/// An encoder, once loaded.
struct Slot(OnceLock<&'static Tokenizer>);

static O200K: Slot = Slot(OnceLock::new());
static CL100K: Slot = Slot(OnceLock::new());

impl Encoding {
    /// The encoding of `model` (an OpenAI model id, `ft:<base>:...` fine-tunes included), and
    /// whether the name was known; an unknown name is assumed to be o200k_base, the encoding of
    /// every OpenAI chat model since GPT-4o (callers say so where it shows).
    pub fn for_model(model: &str) -> (Encoding, bool) {
        let base = model
            .strip_prefix("ft:")
            .map_or(model, |rest| rest.split(':').next().unwrap_or(rest));
        // `openai/gpt-4o` (a router's name) and `gpt-4o` are the same model
        let base = base.rsplit('/').next().unwrap_or(base);
        PREFIXES
            .iter()
            .find(|(p, _)| base.starts_with(p))
            .map_or((Encoding::O200kBase, false), |(_, e)| (*e, true))
    }

    /// The encoding's name as tiktoken spells it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    fn slot(self) -> &'static Slot {
        match self {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        }
    }

    /// Loads the encoder now (blocking: ~50 ms the first time in a release build), if not yet loaded.
    pub fn load(self) -> &'static Tokenizer {
        self.slot().0.get_or_init(|| match self {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        })
    }

    /// The encoder if it is loaded already: the request path never waits for a load.
    pub fn loaded(self) -> Option<&'static Tokenizer> {
        self.slot().0.get().copied()
    }

    /// Tokens of `text` (ordinary text: `<|endoftext|>` in it counts as text, not as the special
    /// token), loading the encoder first if needed. For the offline tools.
    pub fn count(self, text: &str) -> u64 {
        self.load().count(text) as u64
    }

    /// Tokens of `text` if the encoder is loaded, else bytes / 4 rounded up: for the request path.
    pub fn count_if_loaded(self, text: &str) -> u64 {
        match self.loaded() {
            Some(t) => t.count(text) as u64,
            None => text.len().div_ceil(4) as u64,
        }
    }
}

/// Loads, on a background thread, these encoders (once each, those not loaded yet), so that no
/// request waits for a load and the estimates of broken streams are exact from the first moments.
pub fn load_in_background(encodings: impl IntoIterator<Item = Encoding>) {
    let mut need: Vec<Encoding> = encodings.into_iter().collect();
    need.sort_by_key(|e| e.name());
    need.dedup();
    need.retain(|e| e.loaded().is_none());
    if need.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tailor-tokenizer-load".into())
        .spawn(move || {
            for e in need {
                let t = std::time::Instant::now();
                e.load();
                tracing::debug!(
                    encoding = e.name(),
                    ms = t.elapsed().as_millis() as u64,
                    "tokenizer loaded"
                );
            }
        });
    if let Err(e) = spawned {
        // estimates stay at bytes / 4 until something loads the encoder: not worth failing for
        tracing::warn!(error = %e, "cannot start the tokenizer loading thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_their_encodings() {
        for (model, enc, known) in [
            ("gpt-4o", Encoding::O200kBase, true),
            ("gpt-4o-mini-2024-07-18", Encoding::O200kBase, true),
            (
                "ft:gpt-4o-2024-08-06:acme:support:abc123",
                Encoding::O200kBase,
                true,
            ),
            (
                "ft:gpt-4o-mini-2024-07-18:acme::xyz",
                Encoding::O200kBase,
                true,
            ),
            ("o1-mini", Encoding::O200kBase, true),
            ("o3", Encoding::O200kBase, true),
            ("gpt-4.1-nano", Encoding::O200kBase, true),
            ("gpt-5-mini", Encoding::O200kBase, true),
            ("gpt-4", Encoding::Cl100kBase, true),
            ("gpt-4-turbo", Encoding::Cl100kBase, true),
            ("gpt-3.5-turbo-0125", Encoding::Cl100kBase, true),
            ("ft:gpt-3.5-turbo-0125:acme::1", Encoding::Cl100kBase, true),
            ("gpt-35-turbo", Encoding::Cl100kBase, true),
            ("text-embedding-3-small", Encoding::Cl100kBase, true),
            ("openai/gpt-4o", Encoding::O200kBase, true),
            ("llama-3-70b", Encoding::O200kBase, false),
            ("my-deployment", Encoding::O200kBase, false),
        ] {
            assert_eq!(Encoding::for_model(model), (enc, known), "{model}");
        }
    }

    /// tiktoken's and tiktoken-rs's own test strings, and the cookbook's examples.
    #[test]
    fn counts_match_published_examples() {
        let o = Encoding::O200kBase;
        let c = Encoding::Cl100kBase;
        // tiktoken tests/test_encoding.py: "hello world" is [15339, 1917] in cl100k_base,
        // [24912, 2375] in o200k_base; tiktoken-rs: "This is a test         with a lot of spaces"
        assert_eq!(c.count("hello world"), 2);
        assert_eq!(o.count("hello world"), 2);
        assert_eq!(c.count("This is a test         with a lot of spaces"), 10);
        assert_eq!(c.count(""), 0);
        // the cookbook's section 5, "Comparing encodings"
        assert_eq!(c.count("tiktoken is great!"), 6);
        assert_eq!(o.count("antidisestablishmentarianism"), 6);
        assert_eq!(c.count("antidisestablishmentarianism"), 6);
        assert_eq!(o.count("2 + 2 = 4"), 7);
        assert_eq!(c.count("2 + 2 = 4"), 7);
        assert_eq!(o.count("お誕生日おめでとう"), 8);
        assert_eq!(c.count("お誕生日おめでとう"), 9);
        // special tokens are text here: more than one token
        assert!(c.count("<|endoftext|>") > 1);
        assert!(o.loaded().is_some() && c.loaded().is_some());
        assert_eq!(o.count_if_loaded("hello world"), 2);
    }

    /// The same counts as tiktoken-rs (the reference port of OpenAI's tiktoken) on mixed text.
    #[test]
    fn counts_equal_tiktoken_rs() {
        let texts = [
            "Hi! I ordered the Acme X200 on 2024-03-14 (order #A-99812); it shows `E4`.\n\n",
            "  leading spaces,\ttabs\r\nand CRLF   \n",
            "naïve café — 東京タワー 😀 ünïcödé",
            "fn main() { let x: Vec<u8> = vec![1, 22, 333, 4444]; println!(\"{x:?}\"); }",
            "I'm sure they'll say we've done it, don't you?",
            "<|endoftext|> is text here",
        ];
        let (o, c) = (
            tiktoken_rs::o200k_base_singleton(),
            tiktoken_rs::cl100k_base_singleton(),
        );
        for t in texts {
            assert_eq!(
                Encoding::O200kBase.count(t),
                o.encode_ordinary(t).len() as u64,
                "{t}"
            );
            assert_eq!(
                Encoding::Cl100kBase.count(t),
                c.encode_ordinary(t).len() as u64,
                "{t}"
            );
        }
    }
}
