//! The documentation stays true to the repository.
//!
//! Reads README.md, ARCHITECTURE.md and docs/*.md with a CommonMark parser:
//! every relative link (inline, by reference, images) names a file that
//! exists and an anchor one of its headings makes by GitHub's rule; every
//! reference link has its definition; every repository path in inline code
//! exists (a path with a slash counts when its first folder is one of ours; a
//! bare file name always does), and a file.rs:function form names a function of
//! that file. The crates' comments are
//! held to the same rule for the paths they name. Paths that exist only at run
//! time (`.dev/…`, `target/…`) and absolute ones are not checked.
//!
//! Code, comments and scripts name sections in prose, as `docs/deploy.md,
//! "What it costs"` or `README, "The two commands"`: each names a file that
//! exists and the start of one of its headings.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The README is what a newcomer reads first: one to three screens.
const README_MAX_LINES: usize = 300;

/// Paths that exist only while the system runs or builds, never in a clone.
const RUN_TIME_PATHS: &[&str] = &[".dev/", "target/"];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root exists")
}

/// README.md, ARCHITECTURE.md and every docs/*.md, sorted.
fn documentation_files(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    [root.join("README.md"), root.join("ARCHITECTURE.md")]
        .into_iter()
        .chain(docs)
        .collect()
}

/// What a markdown file holds that can go stale, each with its line.
#[derive(Debug, Default)]
struct Markdown {
    headings: Vec<String>,
    links: Vec<(usize, String)>,
    /// `[text][label]` without a `[label]: target` definition.
    undefined_references: Vec<(usize, String)>,
    code_spans: Vec<(usize, String)>,
}

fn parse(text: &str) -> Markdown {
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut undefined = Vec::new();
    let mut note_undefined = |link: pulldown_cmark::BrokenLink<'_>| {
        undefined.push((line_of(link.span.start), link.reference.to_string()));
        None
    };
    let parser =
        Parser::new_with_broken_link_callback(text, Options::empty(), Some(&mut note_undefined));
    let mut markdown = Markdown::default();
    // The text of the heading being read: its text and its code, as GitHub slugs it.
    let mut heading: Option<String> = None;
    for (event, range) in parser.into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => markdown.headings.extend(heading.take()),
            Event::Text(text) => heading.iter_mut().for_each(|h| h.push_str(&text)),
            Event::Code(code) => {
                heading.iter_mut().for_each(|h| h.push_str(&code));
                markdown
                    .code_spans
                    .push((line_of(range.start), code.to_string()));
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                markdown
                    .links
                    .push((line_of(range.start), dest_url.to_string()));
            }
            _ => {}
        }
    }
    markdown.undefined_references = undefined;
    markdown
}

/// GitHub's anchor for a heading's text: lower case; letters, digits,
/// spaces, hyphens and underscores kept, everything else dropped; spaces
/// become hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a file's headings make, duplicates numbered -1, -2, … as
/// GitHub numbers them.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    parse(text)
        .headings
        .iter()
        .map(|heading| {
            let base = slug(heading);
            let count = seen.entry(base.clone()).or_insert(0);
            let anchor = match *count {
                0 => base,
                n => format!("{base}-{n}"),
            };
            *count += 1;
            anchor
        })
        .collect()
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
        from.parent().expect("a file has a folder").join(path)
    };
    let Ok(file) = file.canonicalize() else {
        return Some(format!("{path} does not exist"));
    };
    let anchor = anchor?;
    if file.is_dir() {
        return Some(format!("#{anchor} points into a folder"));
    }
    let text = fs::read_to_string(&file).expect("the target is readable");
    (!anchors(&text).contains(anchor)).then(|| format!("no heading of {path} makes #{anchor}"))
}

/// The folders a path in inline code may be relative to: the repository, the
/// naming file's folder, and every crate's folder and its `src/` (the docs
/// describe a crate's files from inside it).
fn path_bases(root: &Path, from: &Path) -> Vec<PathBuf> {
    let mut bases = vec![root.to_path_buf()];
    bases.extend(from.parent().map(Path::to_path_buf));
    for manifest in crate_manifests(root) {
        let dir = manifest.parent().expect("a manifest has a folder");
        bases.push(dir.to_path_buf());
        bases.push(dir.join("src"));
    }
    bases
}

/// Every crate's `Cargo.toml` but the workspace's, one or two folders down.
fn crate_manifests(root: &Path) -> Vec<PathBuf> {
    let mut manifests = Vec::new();
    for entry in fs::read_dir(root)
        .expect("the repository is readable")
        .flatten()
    {
        let dir = entry.path();
        for candidate in [dir.join("Cargo.toml"), dir.join("checks/Cargo.toml")] {
            if candidate.is_file() {
                manifests.push(candidate);
            }
        }
    }
    manifests
}

/// The path an inline code span names, with the function of a
/// file.rs:function, or `None` when the span is not a repository path
/// (`application/json`, `GET /orders`, `.dev/env`, a glob, a placeholder).
fn named_path<'a>(span: &'a str, bases: &[PathBuf]) -> Option<(&'a str, Option<&'a str>)> {
    if span.is_empty()
        || span.contains(char::is_whitespace)
        || span.contains("://")
        || span.contains(['*', '<', '{', '…', '$', '='])
        || span.starts_with(['/', '-', '~'])
        || RUN_TIME_PATHS.iter().any(|p| span.starts_with(p))
    {
        return None;
    }
    let (path, function) = match span.split_once(".rs:") {
        Some((file, function)) => (&span[..file.len() + 3], Some(function)),
        None => (span, None),
    };
    let path = path.trim_end_matches(['.', ',']);
    let file_like = Path::new(path).extension().is_some_and(|ext| {
        matches!(
            ext.to_str(),
            Some("rs" | "md" | "sql" | "yaml" | "toml" | "json" | "html" | "js" | "png")
        )
    });
    let ours = match path.split_once('/') {
        // Another repository's path (`translator/config/schema.json`) is not checked.
        Some((first, _)) => bases.iter().any(|base| base.join(first).exists()),
        None => file_like,
    };
    ours.then_some((path, function))
}

/// Why a path named in inline code is stale, or `None` when it exists.
fn stale(span: &str, bases: &[PathBuf]) -> Option<String> {
    let (path, function) = named_path(span, bases)?;
    let Some(file) = bases.iter().map(|b| b.join(path)).find(|f| f.exists()) else {
        return Some(format!("`{span}`: {path} does not exist"));
    };
    let function = function?;
    let text = fs::read_to_string(&file).unwrap_or_default();
    (!text.contains(&format!("fn {function}")))
        .then(|| format!("`{span}`: {path} has no function {function}"))
}

/// The comment lines of a Rust file, with their line numbers.
fn rust_comments(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| line.trim_start().strip_prefix("//").map(|c| (i + 1, c)))
        .collect()
}

/// The inline code spans of one comment line.
fn code_spans_of_line(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Every `.rs` file of the workspace outside build output.
fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(folder)
        .expect("the repository is readable")
        .flatten()
    {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".dev" | ".git") {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// The crate folder a file belongs to: its nearest folder with a `Cargo.toml`.
fn crate_of(file: &Path) -> Option<&Path> {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
}

/// Every broken link, undefined reference and stale path of the docs, one
/// line each, by file and line.
fn stale_docs(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        let text = fs::read_to_string(file).expect("the documentation is readable");
        let markdown = parse(&text);
        let bases = path_bases(root, file);
        for (line, target) in &markdown.links {
            if let Some(why) = broken(file, target) {
                found.push(format!("{shown}:{line}: ({target}): {why}"));
            }
        }
        for (line, label) in &markdown.undefined_references {
            found.push(format!(
                "{shown}:{line}: [{label}]: no definition of this reference"
            ));
        }
        for (line, span) in &markdown.code_spans {
            if let Some(why) = stale(span, &bases) {
                found.push(format!("{shown}:{line}: {why}"));
            }
        }
    }
    found
}

#[test]
fn every_link_and_path_of_the_docs_resolves() {
    let root = repository_root();
    let stale = stale_docs(&root, &documentation_files(&root));
    assert!(
        stale.is_empty(),
        "{} stale:\n{}",
        stale.len(),
        stale.join("\n")
    );
}

#[test]
fn every_path_a_crates_comments_name_exists() {
    let root = repository_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut stale_paths = Vec::new();
    for file in &files {
        let Some(krate) = crate_of(file) else {
            continue;
        };
        let folder = file.parent().expect("a file has a folder").to_path_buf();
        let bases = [folder, krate.to_path_buf(), krate.join("src"), root.clone()];
        let text = fs::read_to_string(file).expect("a source file is readable");
        for (line, comment) in rust_comments(&text) {
            for span in code_spans_of_line(comment) {
                if let Some(why) = stale(span, &bases) {
                    let shown = file.strip_prefix(&root).unwrap_or(file).display();
                    stale_paths.push(format!("{shown}:{line}: {why}"));
                }
            }
        }
    }
    assert!(
        files.len() > 50,
        "found only {} Rust files: is the walk broken?",
        files.len()
    );
    assert!(
        stale_paths.is_empty(),
        "{} stale paths:\n{}",
        stale_paths.len(),
        stale_paths.join("\n")
    );
}

/// Files outside the documentation that may name a section of it: code,
/// comments, scripts, configuration. Build output and local tools are not read.
fn source_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(folder)
        .expect("the repository is readable")
        .flatten()
    {
        let path = entry.path();
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
        while let Some(start) = [rest.find("docs/"), rest.find("README")]
            .into_iter()
            .flatten()
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
            let separated = after[file_end..].starts_with([',', ':', ' ']);
            let tail = after[file_end..].trim_start_matches([',', ':', ' ']);
            let quoted = tail.strip_prefix("\\\"").or_else(|| tail.strip_prefix('"'));
            if file_end > 0
                && separated
                && let Some(quoted) = quoted
                && let Some(end) = quoted.find(['"', '\\'])
            {
                let file = match &after[..file_end] {
                    "README" => "README.md",
                    file => file,
                };
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
            if !parse(&doc)
                .headings
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
                [a gap][nowhere]\n\n\
                [oha]: https://github.com/hatoo/oha\n";
    let markdown = parse(text);
    let targets: Vec<&str> = markdown.links.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        targets,
        [
            "docs/deploy.md#step-by-step",
            "#layout",
            "docs/shot.png",
            "https://github.com/hatoo/oha"
        ]
    );
    assert_eq!(markdown.undefined_references, [(6, "nowhere".to_owned())]);
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

#[test]
fn a_path_or_function_in_inline_code_that_does_not_exist_is_reported() {
    let root = repository_root();
    let bases = path_bases(&root, &root.join("ARCHITECTURE.md"));
    for fine in [
        "consumer-lambda/src/main.rs",
        "infra/template.yaml",
        "lib.rs",
        "support/src/chain.rs:error_chain",
        "application/json",
        "GET /orders",
        ".dev/env",
        "target/debug/producer",
        "migrations/*.sql",
        "translator/config/schema.json",
    ] {
        assert_eq!(stale(fine, &bases), None, "{fine}");
    }
    for stale_path in [
        "consumer-lambda/src/handler.rs",
        "store.rs",
        "support/src/chain.rs:no_such_function",
        "scripts/no-such-script/",
    ] {
        assert!(stale(stale_path, &bases).is_some(), "{stale_path}");
    }
}
