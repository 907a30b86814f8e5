//! The documentation's links resolve, and the README stays short.
//!
//! Reads README.md, ARCHITECTURE.md and docs/*.md. Every relative link,
//! inline (`[text](path)`, `[text](path#anchor)`, `[text](#anchor)`, images
//! too) or by reference (`[text][ref]` with a `[ref]: target` definition),
//! must name a file that exists, relative to the linking file, and an anchor
//! that one of the target's headings makes by GitHub's rule. Links with a
//! scheme (`https://`, `mailto:`) are not followed. Fenced code blocks and
//! inline code are not read for links.
//!
//! Code, comments and scripts name sections in prose, as `docs/deploy.md,
//! "What it costs"` or `README, "The two commands"`: each names a file that
//! exists and the start of one of its headings.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The README is what a newcomer reads first: one to three screens.
const README_MAX_LINES: usize = 300;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// README.md, ARCHITECTURE.md and every docs/*.md, sorted.
fn documentation_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a markdown file that are prose: fenced code blocks become
/// empty lines, so line numbers stay right.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fence: Option<String> = None;
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let marker: String = trimmed
                .chars()
                .take_while(|&c| c == '`' || c == '~')
                .collect();
            match &fence {
                Some(open) => {
                    if marker.len() >= open.len() && marker.starts_with(&open[..1]) {
                        fence = None;
                    }
                    String::new()
                }
                None if marker.len() >= 3
                    && marker.chars().all(|c| c == marker.as_bytes()[0] as char) =>
                {
                    fence = Some(marker);
                    String::new()
                }
                None => line.to_owned(),
            }
        })
        .collect()
}

/// A line with its inline code spans blanked out (a span may hold `](`).
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => {
                out.push_str(&" ".repeat(ticks + end + ticks));
                rest = &after[end + ticks..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor for a heading's text: lower case; letters, digits,
/// spaces, hyphens and underscores kept, everything else dropped; spaces
/// become hyphens. A link inside the heading counts by its text.
fn slug(heading: &str) -> String {
    let text = link_texts_only(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` becomes `text`.
fn link_texts_only(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every anchor a file's headings make, duplicates numbered -1, -2, … as
/// GitHub numbers them.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    for line in prose_lines(text) {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let rest = &trimmed[hashes..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        let heading = rest.trim().trim_end_matches('#').trim_end();
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// A link found in a file: where, and what it points at.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// `[ref]: target` definitions, by lower-cased label.
fn reference_definitions(text: &str) -> HashMap<String, Link> {
    let mut definitions = HashMap::new();
    for (index, line) in prose_lines(text).iter().enumerate() {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 || !trimmed.starts_with('[') {
            continue;
        }
        let Some(close) = trimmed.find("]:") else {
            continue;
        };
        let label = &trimmed[1..close];
        let Some(target) = trimmed[close + 2..].split_whitespace().next() else {
            continue;
        };
        definitions.insert(
            label.to_lowercase(),
            Link {
                line: index + 1,
                target: target
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            },
        );
    }
    definitions
}

/// The inline links of a file (`](target)`), and the labels of its full and
/// collapsed reference links (`][label]`, `][]`), each with its line.
fn inline_and_reference_links(text: &str) -> (Vec<Link>, Vec<Link>) {
    let mut inline = Vec::new();
    let mut references = Vec::new();
    for (index, line) in prose_lines(text).iter().enumerate() {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(close) = [rest.find("]("), rest.find("][")]
            .into_iter()
            .flatten()
            .min()
        {
            let inline_link = rest[close..].starts_with("](");
            let after = &rest[close + 2..];
            if inline_link {
                let mut depth = 0usize;
                let end = after
                    .char_indices()
                    .find(|&(_, c)| match c {
                        '(' => {
                            depth += 1;
                            false
                        }
                        ')' if depth == 0 => true,
                        ')' => {
                            depth -= 1;
                            false
                        }
                        _ => false,
                    })
                    .map_or(after.len(), |(i, _)| i);
                let target = after[..end].split_whitespace().next().unwrap_or("");
                inline.push(Link {
                    line: index + 1,
                    target: target
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned(),
                });
                rest = &after[end..];
            } else {
                let end = after.find(']').unwrap_or(after.len());
                let label = if end == 0 {
                    // `[text][]`: the text is the label.
                    let opening = rest[..close].rfind('[').map_or(0, |i| i + 1);
                    &rest[opening..close]
                } else {
                    &after[..end]
                };
                references.push(Link {
                    line: index + 1,
                    target: label.to_lowercase(),
                });
                rest = &after[end.min(after.len())..];
            }
        }
    }
    (inline, references)
}

/// A path made of `.` and `..` steps resolved, without asking the file
/// system (the target may not exist).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Why a link does not resolve, or `None` when it does.
fn broken(from: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty target".to_owned());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        normalise(&from.parent().expect("a file has a folder").join(path))
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    if file.is_dir() {
        return Some(format!("#{anchor} points into a folder"));
    }
    let text = fs::read_to_string(&file).expect("the target is readable");
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!("no heading of {} makes #{anchor}", file.display()))
    }
}

/// Every broken link of the given files, one line each, by file and line.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut broken_links: Vec<(String, usize, String)> = Vec::new();
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    for file in files {
        let text = fs::read_to_string(file).expect("the documentation is readable");
        let definitions = reference_definitions(&text);
        let (inline, references) = inline_and_reference_links(&text);
        for link in inline.iter().chain(definitions.values()) {
            if let Some(why) = broken(file, &link.target) {
                let why = why.replace(&format!("{}/", root.display()), "");
                broken_links.push((shown(file), link.line, format!("({}): {why}", link.target)));
            }
        }
        for reference in references {
            if !definitions.contains_key(&reference.target) {
                broken_links.push((
                    shown(file),
                    reference.line,
                    format!("[{}]: no definition of this reference", reference.target),
                ));
            }
        }
    }
    broken_links.sort();
    broken_links
        .into_iter()
        .map(|(file, line, why)| format!("{file}:{line}: {why}"))
        .collect()
}

/// The headings of a markdown file, as text without backticks.
fn headings(text: &str) -> Vec<String> {
    prose_lines(text)
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix('#')?.trim_start_matches('#');
            rest.starts_with(' ').then(|| {
                link_texts_only(rest.trim().trim_end_matches('#').trim_end()).replace('`', "")
            })
        })
        .collect()
}

/// Files outside the documentation that may name a section of it: code,
/// comments, scripts, configuration. Build output and local tools are not read.
fn source_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(folder).expect("the repository is readable") {
        let path = entry.expect("the repository is readable").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".dev" | ".git" | "docs") {
                source_files(&path, found);
            }
        } else if !name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// `docs/deploy.md, "What it costs"` or `README, "The two commands"`: the
/// file and the heading a source file names, with the line.
fn section_references(text: &str) -> Vec<(usize, String, String)> {
    let mut references = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest
            .find("docs/")
            .into_iter()
            .chain(rest.find("README"))
            .min()
        {
            let after = &rest[start..];
            let file_end = if after.starts_with("README.md") {
                "README.md".len()
            } else if after.starts_with("README") {
                "README".len()
            } else {
                // docs/<name>.md, the name in lower case and hyphens.
                let name = after["docs/".len()..]
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                    .map_or(0, |i| i + "docs/".len());
                if after[name..].starts_with(".md") {
                    name + ".md".len()
                } else {
                    0
                }
            };
            let file = &after[..file_end];
            let separated = after[file_end..].starts_with([',', ':', ' ']);
            let tail = after[file_end..].trim_start_matches([',', ':', ' ']);
            let quoted = tail.strip_prefix("\\\"").or_else(|| tail.strip_prefix('"'));
            if file_end > 0
                && separated
                && let Some(quoted) = quoted
                && let Some(end) = quoted.find(['"', '\\'])
            {
                let file = if file == "README" { "README.md" } else { file };
                references.push((index + 1, file.to_owned(), quoted[..end].to_owned()));
            }
            rest = &after[file_end.max(1)..];
        }
    }
    references
}

#[test]
fn every_docs_section_named_in_the_code_exists() {
    let root = repository_root();
    let mut files = Vec::new();
    source_files(&root, &mut files);
    files.sort();
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue; // not text
        };
        for (line, target, section) in section_references(&text) {
            let shown = file.strip_prefix(&root).unwrap_or(&file).display();
            let Ok(doc) = fs::read_to_string(root.join(&target)) else {
                missing.push(format!("{shown}:{line}: {target} does not exist"));
                continue;
            };
            checked += 1;
            let wanted = section.to_lowercase();
            if !headings(&doc)
                .iter()
                .any(|h| h.to_lowercase().starts_with(&wanted))
            {
                missing.push(format!(
                    "{shown}:{line}: no heading of {target} starts with \"{section}\""
                ));
            }
        }
    }
    assert!(
        checked > 10,
        "found only {checked} section references: is the scanner broken?"
    );
    assert!(
        missing.is_empty(),
        "{} sections not found:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = repository_root();
    let broken = broken_links(&root, &documentation_files(&root));
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_readme_is_shorter_than_300_lines() {
    let readme = fs::read_to_string(repository_root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines; move detail into docs/ and link to it"
    );
}

#[test]
fn headings_make_the_anchors_github_makes() {
    let text = "# Orders on SQS\n\
                ## Under faults: `scripts/chaos`\n\
                ## Operating: the dead-letter queue\n\
                ### What it costs\n\
                ### What it costs\n\
                ### What it costs ###\n\
                ```\n# not a heading\n```\n\
                ## See [the consumer](consumer.md), its_store\n";
    let mut anchors: Vec<String> = anchors(text).into_iter().collect();
    anchors.sort();
    assert_eq!(
        anchors,
        [
            "operating-the-dead-letter-queue",
            "orders-on-sqs",
            "see-the-consumer-its_store",
            "under-faults-scriptschaos",
            "what-it-costs",
            "what-it-costs-1",
            "what-it-costs-2",
        ]
    );
}

#[test]
fn links_are_found_inline_by_reference_and_never_in_code() {
    let text = "See [deploying](docs/deploy.md#step-by-step) and [here](#layout).\n\
                ![a picture](docs/shot.png \"a title\") and [a tool][oha], not `[x](y)`.\n\
                ```sh\n[not](a-link)\n```\n\
                [oha]: https://github.com/hatoo/oha\n";
    let (inline, references) = inline_and_reference_links(text);
    let targets: Vec<&str> = inline.iter().map(|link| link.target.as_str()).collect();
    assert_eq!(
        targets,
        ["docs/deploy.md#step-by-step", "#layout", "docs/shot.png"]
    );
    assert_eq!(
        references,
        [Link {
            line: 2,
            target: "oha".to_owned()
        }]
    );
    let definitions = reference_definitions(text);
    assert_eq!(definitions["oha"].target, "https://github.com/hatoo/oha");
}

#[test]
fn a_link_to_a_missing_file_or_heading_is_reported() {
    let root = repository_root();
    let readme = root.join("README.md");
    assert_eq!(broken(&readme, "ARCHITECTURE.md"), None);
    assert_eq!(broken(&readme, "https://example.com/#nowhere"), None);
    assert!(broken(&readme, "docs/no-such-file.md").is_some());
    assert!(broken(&readme, "#no-such-heading").is_some());
    assert!(broken(&readme, "ARCHITECTURE.md#no-such-heading").is_some());
}
