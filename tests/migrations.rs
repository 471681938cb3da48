//! The two migration trees (`migrations/sqlite`, `migrations/postgres`) are
//! embedded per backend, but their SQL is portable and must stay the same:
//! a change made to one tree only would give the backends different
//! schemas. A migration whose SQL must differ is listed in
//! [`BACKEND_SPECIFIC`], with the reason, and is then only required to
//! exist in both trees.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `folder/file` names allowed to differ between the backends.
const BACKEND_SPECIFIC: &[&str] = &[
    // A trigger: SQLite's logs the insert to a table, PostgreSQL's sends a
    // NOTIFY; the two dialects share no trigger syntax.
    "2026-12-03-000005_key_filter/up.sql",
    "2026-12-03-000005_key_filter/down.sql",
];

fn tree(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

fn files(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for folder in std::fs::read_dir(root).unwrap() {
        let folder = folder.unwrap().path();
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            found.insert(format!(
                "{}/{}",
                folder.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    found
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sqlite = files(&tree("sqlite"));
    let postgres = files(&tree("postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "the two trees hold different migrations");
    for name in &sqlite {
        if BACKEND_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        let a = std::fs::read(tree("sqlite").join(name)).unwrap();
        let b = std::fs::read(tree("postgres").join(name)).unwrap();
        assert!(
            a == b,
            "{name} differs between migrations/sqlite and migrations/postgres; \
             make them equal or list it in BACKEND_SPECIFIC with the reason"
        );
    }
}
