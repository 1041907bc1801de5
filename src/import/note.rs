//! What an importer could not convert, or converted with a caveat, and why: printed on stderr.

use std::fmt;

/// One line of the importer's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    /// Where in the source config: `model_list[2].litellm_params.api_key`.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Left out of the routes.yaml.
    NotConverted,
    /// Converted, but a person should look (a placeholder, a key not copied, a rounded price).
    Check,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            NoteKind::NotConverted => "not converted",
            NoteKind::Check => "check",
        };
        write!(f, "{kind}: {}: {}", self.path, self.message)
    }
}

/// The notes gathered while converting.
#[derive(Debug, Default)]
pub struct Notes(pub Vec<Note>);

impl Notes {
    pub fn skip(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(NoteKind::NotConverted, path, message);
    }

    pub fn check(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(NoteKind::Check, path, message);
    }

    fn push(&mut self, kind: NoteKind, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Note {
            kind,
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Why an import produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    NotThatFormat(String),
    /// The importer wrote a routes.yaml tailor rejects: a bug in the importer.
    #[error("the converted routes.yaml does not load ({0}); please report this with the input")]
    Invalid(String),
}

/// A converted config.
#[derive(Debug)]
pub struct Imported {
    /// The routes.yaml text.
    pub yaml: String,
    pub notes: Vec<Note>,
    /// Routes written; 0 means nothing could be converted.
    pub routes: usize,
}
