//! docs/: every repository path and every link between the pages points at something that
//! exists, so the documentation cannot silently drift from deploy/.

use crate::common::{read, root};

#[test]
fn paths_and_links_in_the_docs_exist() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for page in [
        "deploy.md",
        "configuration.md",
        "operations.md",
        "known-gaps.md",
    ] {
        let text = read(&format!("docs/{page}"));
        // `deploy/...`, `tests/...`, `scripts/...` in code spans.
        for span in text.split('`').skip(1).step_by(2) {
            for word in span.split_whitespace() {
                let word = word.trim_end_matches([',', '.', ':', ')']);
                let word = word.split(':').next().unwrap_or(word);
                if ["deploy/", "tests/", "scripts/", "docs/"]
                    .iter()
                    .any(|p| word.starts_with(p))
                    && !word.contains('*')
                {
                    checked += 1;
                    if !root().join(word).exists() {
                        missing.push(format!("{page}: {word}"));
                    }
                }
            }
        }
        // Links to sibling pages: [text](page.md) or (page.md#anchor).
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap_or_default();
            let file = target.split('#').next().unwrap_or_default();
            if file.ends_with(".md") {
                checked += 1;
                if !root().join("docs").join(file).exists() {
                    missing.push(format!("{page}: link {target}"));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} references found");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
