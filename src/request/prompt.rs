//! The texts of a prompt (system and user messages), read in one pass when a route's `system` or
//! `content` condition needs them, with the [`Cursor`] (a long text costs a SIMD search, not a
//! parse): strings are borrowed from the body unless they hold escapes, and everything else is
//! skipped. A prompt whose texts are one unescaped string per group (a system message and a user
//! message, say) is not copied at all.

// Reads untrusted bytes: no indexing that could panic (`.get()` instead).
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;

use crate::json::scan::{self, Cursor};
use crate::json::Raw;

/// Message texts by role group, extracted only when a route needs them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PromptText<'a> {
    /// System and developer messages (and Responses `instructions`), joined by newlines.
    pub system: Cow<'a, str>,
    /// User messages (or the plain prompt / input), joined by newlines.
    pub user: Cow<'a, str>,
}

/// Appends the texts of a messages array / prompt / input to the right group, reading it once.
/// The body was already validated, so a shape we do not know is skipped, never an error. A value
/// serde_json would not visit (a lone `\u` surrogate, a number out of range, a `role` that is not a
/// string) ends the reading there: the texts of the messages before it are kept, not its own.
pub fn collect_prompt<'a>(v: Raw<'a>, t: &mut PromptText<'a>) {
    let _ = prompt(&mut Cursor::from_text(v.get()), t);
}

/// Appends a content value (a string, or an array of parts whose `text` fields are taken; other
/// parts are skipped): all of its texts, or none when a value in it cannot be visited (as in
/// [`collect_prompt`]).
pub fn collect_content<'a>(v: Raw<'a>, dst: &mut Cow<'a, str>) {
    let mut texts = Vec::new();
    if texts_of(&mut Cursor::from_text(v.get()), &mut texts).is_ok() {
        for s in texts {
            push_line(dst, s);
        }
    }
}

/// Whether one message is the system's or the developer's (a system prompt's `replace` mode takes
/// these out): its `role` is "system" or "developer", or one of them is when the key repeats (an
/// upstream may read any of them). Only roles are read: every other value is skipped for its form
/// alone, so a content that cannot be read as text (a lone `\u` surrogate, a number out of range)
/// does not hide the role. A message that is not an object has none.
pub fn is_system_message(message: &str) -> bool {
    let c = &mut Cursor::from_text(message);
    let Ok(mut members) = c.object() else {
        return false;
    };
    let mut system = false;
    while let Ok(Some(key)) = members.key(c) {
        let at = c.mark();
        let role = (key.as_ref() == b"role" && c.peek() == Some(b'"'))
            .then(|| c.string().ok())
            .flatten();
        match role {
            Some(role) => system |= matches!(role.as_ref(), "system" | "developer"),
            // another member, or a role that is not text (a lone surrogate): neither of these
            None => {
                c.rewind(at);
                if c.skip().is_err() {
                    break;
                }
            }
        }
    }
    system
}

/// The whole prompt: a string, or an array of messages (or of strings).
fn prompt<'a>(c: &mut Cursor<'a>, t: &mut PromptText<'a>) -> scan::Result<()> {
    match c.peek() {
        Some(b'"') => push_line(&mut t.user, c.string()?),
        Some(b'[') => {
            let mut items = c.array()?;
            let mut texts = Vec::new();
            while items.next(c)? {
                let role = texts_of(c, &mut texts)?;
                // a plain string (completions prompt, embeddings input) has no role: user text
                let dst = match role.as_deref() {
                    Some("system" | "developer") => &mut t.system,
                    Some("user") | None => &mut t.user,
                    Some(_) => {
                        texts.clear();
                        continue;
                    }
                };
                for s in texts.drain(..) {
                    push_line(dst, s);
                }
            }
        }
        Some(b'{') => c.object()?.skip_rest(c)?,
        _ => c.scalar()?,
    }
    Ok(())
}

/// Adds the texts of one value to `out`: a string is itself; an array, its elements' texts; an
/// object (a message or a content part), its `content` and `text` texts. Returns an object's
/// `role`. Any other value is visited and left.
fn texts_of<'a>(
    c: &mut Cursor<'a>,
    out: &mut Vec<Cow<'a, str>>,
) -> scan::Result<Option<Cow<'a, str>>> {
    match c.peek() {
        Some(b'"') => out.push(c.string()?),
        Some(b'[') => {
            let mut items = c.array()?;
            while items.next(c)? {
                texts_of(c, out)?;
            }
        }
        Some(b'{') => {
            let mut role = None;
            let mut members = c.object()?;
            while let Some(key) = members.key(c)? {
                match key.as_ref() {
                    b"role" => role = Some(c.string()?),
                    b"content" | b"text" => {
                        texts_of(c, out)?;
                    }
                    _ => c.skip()?,
                }
            }
            return Ok(role);
        }
        _ => c.scalar()?,
    }
    Ok(None)
}

/// Adds `s` as a line of `dst`: the first is kept as it is (borrowed from the body, no copy).
fn push_line<'a>(dst: &mut Cow<'a, str>, s: Cow<'a, str>) {
    if dst.is_empty() {
        *dst = s;
    } else {
        let d = dst.to_mut();
        d.push('\n');
        d.push_str(&s);
    }
}

#[cfg(test)]
mod tests;
