//! An error and its sources on one line, so one log line tells the whole story.

use std::error::Error;

/// `outer: cause: cause`.
pub fn error_chain(err: &dyn Error) -> String {
    let causes = std::iter::successors(err.source(), |&cause| cause.source());
    let mut parts = vec![err.to_string()];
    parts.extend(causes.map(ToString::to_string));
    parts.join(": ")
}

/// Like [`error_chain`], leaving out a text the previous part already contains
/// and ending after the first error for which `is_last` is true (one whose
/// text already says what its sources would).
pub fn error_chain_once(
    err: &(dyn Error + 'static),
    is_last: impl Fn(&(dyn Error + 'static)) -> bool,
) -> String {
    let chain = std::iter::successors(Some(err), |&err| err.source().filter(|_| !is_last(err)));
    let mut parts: Vec<String> = Vec::new();
    for text in chain.map(ToString::to_string) {
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link of a test chain: its own text and, optionally, a source.
    #[derive(Debug)]
    struct Link {
        text: String,
        source: Option<Box<Link>>,
    }

    impl std::fmt::Display for Link {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl Error for Link {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|link| link as _)
        }
    }

    /// The chain `texts[0]: texts[1]: …`, outermost first.
    fn chain(texts: &[&str]) -> Link {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Link {
                    text: (*text).to_owned(),
                    source: source.map(Box::new),
                })
            })
            .expect("at least one text")
    }

    #[test]
    fn an_error_without_a_source_is_its_own_text() {
        assert_eq!(error_chain(&chain(&["refused"])), "refused");
        assert_eq!(error_chain_once(&chain(&["refused"]), |_| false), "refused");
    }

    #[test]
    fn a_chain_is_written_outermost_first_joined_by_colons() {
        let err = chain(&["storing 3 orders failed", "db error", "ERROR: disk full"]);
        assert_eq!(
            error_chain(&err),
            "storing 3 orders failed: db error: ERROR: disk full"
        );
    }

    #[test]
    fn the_plain_chain_keeps_a_cause_its_wrapper_repeats() {
        let err = chain(&["pool: could not connect", "could not connect"]);
        assert_eq!(
            error_chain(&err),
            "pool: could not connect: could not connect"
        );
    }

    #[test]
    fn said_once_a_cause_its_wrapper_already_wrote_is_left_out() {
        let err = chain(&["pool: could not connect", "could not connect", "refused"]);
        assert_eq!(
            error_chain_once(&err, |_| false),
            "pool: could not connect: refused"
        );
    }

    #[test]
    fn said_once_the_walk_ends_after_the_error_that_summarises_its_sources() {
        let err = chain(&["could not send: AccessDenied", "service error", "unhandled"]);
        let is_summary = |e: &(dyn Error + 'static)| e.to_string().starts_with("could not");
        assert_eq!(
            error_chain_once(&err, is_summary),
            "could not send: AccessDenied"
        );
    }
}
