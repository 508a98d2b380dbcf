//! The README's commands stay true: every `cargo run --release -- …` (or `--profile demo`) line
//! names subcommands and flags the binary has (each is run with `--help` appended: clap rejects
//! an unknown subcommand or flag before it prints the help).

use std::process::Command;

/// Split a shell word list: single and double quotes group, nothing else is interpreted.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The `reachy` arguments of every README line that runs the binary through cargo.
fn readme_commands() -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((_, rest)) = ["cargo run --release -- ", "cargo run --profile demo -- "]
            .iter()
            .find_map(|p| line.split_once(p))
        else {
            continue;
        };
        // up to a pipe, a background `&`, a `;` or a comment
        let cmd = rest
            .split(['|', '&', ';', '#', '`'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('\\');
        // `[--flag]` marks an optional flag in the prose: take it as given
        let args = words(cmd)
            .into_iter()
            .map(|w| w.trim_start_matches('[').trim_end_matches(']').to_string())
            .collect();
        out.push((n + 1, args));
    }
    out
}

#[test]
fn every_readme_command_parses() {
    let cmds = readme_commands();
    assert!(cmds.len() > 20, "found only {} commands", cmds.len());
    for (line, args) in cmds {
        let out = Command::new(env!("CARGO_BIN_EXE_reachy"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README.md:{line}: `reachy {}` is not a command line the binary takes: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn words_split_like_a_shell() {
    assert_eq!(
        words(r#"record --task "a b" --x 'c' d"#),
        ["record", "--task", "a b", "--x", "c", "d"]
    );
    assert_eq!(words("  "), Vec::<String>::new());
}
