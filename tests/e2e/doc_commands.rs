//! The commands the docs show are run as written. Every fenced shell block (`sh`, `bash`,
//! `shell`) in README.md, the plugin guide (plugins/README.md) and docs/*.md is either marked
//! to run, in its info string, or named
//! below with the reason it cannot run here; a new block that is neither fails the first test,
//! so a doc command cannot go stale unnoticed.
//!
//! - `sh doctest-server`: started in the background (the README's run command); the following
//!   blocks run while it serves, and it is stopped at the end.
//! - `sh doctest`: run with bash (`-e -o pipefail`) and must exit 0. A comment line
//!   `# => TEXT` in the block means its output must contain TEXT; an output block right after
//!   it (a plain fence) has its answer lines (`200 {...}`) checked the same way.
//!
//! The blocks run in order, in a scratch directory holding a copy of `config/` and links to the
//! repository's `target/` (the built plugins) and `tests/` (fixtures), with the demo secrets of
//! the README in the environment. Two rewrites make a release-build command run on the test
//! build: `cargo run --release -p gateway --` and `target/release/gateway` become `gateway` (on
//! PATH: the binary under test), and `127.0.0.1:8080` becomes the port this run listens on.

use crate::harness::gateway_bin;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Blocks that do not run in the test suite, by file and first line, and why.
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo test --workspace",
        "the test command itself: CI runs it (.ci/run)",
    ),
    (
        "docs/cli.md",
        "gateway send --source ledger --body my-event.json",
        "needs an event file, a secret file and a host of the reader's own",
    ),
    (
        "docs/cli.md",
        "gateway migrate --config /etc/gateway/gateway.toml",
        "needs a PostgreSQL server of the reader's own; tests/e2e/store_cli.rs runs `gateway \
         migrate` against a throwaway cluster",
    ),
    (
        "docs/cli.md",
        "gateway store copy --from /var/lib/gateway/gateway.db",
        "needs a PostgreSQL server of the reader's own; tests/e2e/store_cli.rs runs `gateway \
         store copy` against a throwaway cluster",
    ),
    (
        "docs/store.md",
        "gateway migrate --config /etc/gateway/gateway.toml",
        "needs a PostgreSQL server of the reader's own; tests/e2e/store_cli.rs runs these \
         commands against a throwaway cluster",
    ),
    (
        "docs/operations.md",
        "install -m 0755 target/release/gateway",
        "installs as root under systemd as PID 1; the unit itself is checked by \
         systemd-analyze in tests/e2e/systemd_unit.rs",
    ),
    (
        "docs/operations.md",
        "install -d -o gateway -g gateway",
        "runs as the service's user on an installed system; `gateway backup` itself is run by \
         tests/e2e/backup.rs",
    ),
    (
        "plugins/README.md",
        "cargo run --release -p gateway -- plugin run PLUGIN.wasm",
        "placeholders for the reader's plugin and event; tests/e2e/plugin_examples.rs runs \
         `gateway plugin run` on the examples",
    ),
    (
        "plugins/README.md",
        "plugins/build.sh",
        "runs cargo inside the test; the suite builds the same artifacts through \
         tests/plugin-artifacts before any test runs",
    ),
    (
        "plugins/README.md",
        "cd plugins",
        "`my-plugin` is the reader's; the suite builds the Rust plugins with the same cargo \
         build for wasm32-wasip2 (plugins/build-support/rust_plugins.rs)",
    ),
    (
        "plugins/README.md",
        "cd plugins/js/redact-accounts",
        "tests/plugin-artifacts runs the same `npm ci` and `node build.mjs`, and \
         tests/e2e/plugin_examples.rs the same `node --test`",
    ),
    (
        "plugins/README.md",
        "cd plugins/python/route-by-currency",
        "tests/plugin-artifacts builds it in its own venv with the same pinned componentize-py, \
         and tests/e2e/plugin_examples.rs runs the same unittest",
    ),
    (
        "plugins/README.md",
        "apt-get install -y --no-install-recommends clang",
        "installs as root; .ci/run installs these packages when they are missing",
    ),
    (
        "plugins/README.md",
        "cargo install --locked wit-bindgen-cli",
        "about 15 minutes of `cargo install`; the suite builds the same plugin with the \
         wit-bindgen-c and wit-component libraries (tests/plugin-artifacts/c_plugin.rs)",
    ),
    (
        "docs/performance.md",
        "cargo build --release",
        "a release build and minutes of load: the benchmarks are run by hand",
    ),
    (
        "docs/reliability.md",
        "cargo test -p gateway --test e2e -- --ignored soak_",
        "soaks run for minutes, by hand",
    ),
    (
        "docs/reliability.md",
        "fuzz/run.sh",
        "CI runs it for 15 s per target (.ci/run)",
    ),
    (
        "docs/reliability.md",
        "PROPTEST_CASES=200000",
        "the same property tests run with fewer cases in the suite",
    ),
];

/// The README's demo secrets.
const DEMO_ENV: [(&str, &str); 2] = [
    (
        "LEDGER_SECRET",
        "whsec_ZGVtby1zZWNyZXQtZG8tbm90LXVzZS1pbi1wcm9k",
    ),
    ("LEDIG_TOKEN", "demo-ledig-token"),
];

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    info: String,
    text: String,
    /// The plain fenced block right after this one, if any (shown output).
    output: Option<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// README.md, the plugin guide and docs/*.md, in that order (docs by name).
fn doc_files() -> Vec<String> {
    let root = repo_root();
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_owned(), "plugins/README.md".to_owned()];
    files.extend(docs);
    files
}

/// Every fenced block of one file.
fn fenced_blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo_root().join(file)).expect("read a doc");
    let mut blocks: Vec<Block> = Vec::new();
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    let mut last_closed_at = 0;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((i + 1, info.trim().to_owned(), Vec::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                let Some((line_no, info, body)) = open.take() else {
                    continue;
                };
                let text = body.join("\n");
                // A plain block right after a shell block is that command's output.
                if info.is_empty()
                    && line_no == last_closed_at + 1
                    && let Some(previous) = blocks.last_mut()
                {
                    previous.output = Some(text);
                } else {
                    blocks.push(Block {
                        file: file.to_owned(),
                        line: line_no,
                        info,
                        text,
                        output: None,
                    });
                }
                last_closed_at = i + 1;
            }
            (Some((_, _, body)), _) => body.push(line),
            (None, None) => {}
        }
    }
    blocks
}

fn is_shell(block: &Block) -> bool {
    matches!(
        block.info.split_whitespace().next(),
        Some("sh" | "bash" | "shell")
    )
}

fn marker(block: &Block) -> Option<&str> {
    block
        .info
        .split_whitespace()
        .skip(1)
        .find(|w| w.starts_with("doctest"))
}

fn shell_blocks() -> Vec<Block> {
    doc_files()
        .iter()
        .flat_map(|f| fenced_blocks(f))
        .filter(is_shell)
        .collect()
}

#[test]
fn every_shell_block_in_the_docs_is_run_or_says_why_not() {
    let mut unaccounted = Vec::new();
    for block in shell_blocks() {
        let first = block.text.lines().next().unwrap_or("").trim();
        let listed = NOT_RUN
            .iter()
            .any(|(file, start, _)| *file == block.file && first.starts_with(start));
        match (marker(&block), listed) {
            (Some(_), true) => unaccounted.push(format!(
                "{}:{}: marked to run and listed as not run",
                block.file, block.line
            )),
            (None, false) => unaccounted.push(format!(
                "{}:{}: `{first}`: neither marked `doctest` nor listed in NOT_RUN",
                block.file, block.line
            )),
            _ => {}
        }
    }
    assert!(unaccounted.is_empty(), "{}", unaccounted.join("\n"));
    // Every NOT_RUN entry still names a block (a stale entry hides nothing, but misleads).
    let blocks = shell_blocks();
    for (file, start, _) in NOT_RUN {
        assert!(
            blocks
                .iter()
                .any(|b| b.file == *file && b.text.trim_start().starts_with(start)),
            "NOT_RUN names no block: {file}: {start}"
        );
    }
}

/// A port nobody listens on now (the shipped config names a fixed port; the test moves it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The scratch directory the blocks run in, and the PATH entry holding `gateway`.
fn workdir(port: u16) -> (tempfile::TempDir, PathBuf) {
    let root = repo_root();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("config")).expect("config/");
    let shipped = std::fs::read_to_string(root.join("config/gateway.toml")).expect("config");
    let fixed = r#"listen = "127.0.0.1:8080""#;
    assert_eq!(shipped.matches(fixed).count(), 1, "the listen line moved");
    let moved = shipped.replace(fixed, &format!(r#"listen = "127.0.0.1:{port}""#));
    std::fs::write(dir.path().join("config/gateway.toml"), moved).expect("write config");
    for link in ["target", "tests"] {
        std::os::unix::fs::symlink(root.join(link), dir.path().join(link)).expect("link");
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin/");
    std::os::unix::fs::symlink(gateway_bin(), bin.join("gateway")).expect("link gateway");
    (dir, bin)
}

fn rewrite(text: &str, port: u16) -> String {
    text.replace("cargo run --release -p gateway --", "gateway")
        .replace("target/release/gateway", "gateway")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
}

fn shell(text: &str, dir: &Path, bin: &Path) -> Command {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.args(["-e", "-o", "pipefail", "-c", text])
        .current_dir(dir)
        .env("PATH", path)
        .envs(DEMO_ENV);
    c
}

/// A background server, stopped (its whole process group) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn start_server(block: &Block, dir: &Path, bin: &Path, port: u16) -> Server {
    use std::os::unix::process::CommandExt as _;
    let mut child = shell(&rewrite(&block.text, port), dir, bin)
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server block");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{}:{}: never said `listening on`", block.file, block.line));
    assert!(line.contains(&format!(":{port}")), "{line}");
    server
}

fn run_block(block: &Block, dir: &Path, bin: &Path, port: u16) {
    let started = Instant::now();
    let out = shell(&rewrite(&block.text, port), dir, bin)
        .output()
        .expect("run a block");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = format!("{}:{}", block.file, block.line);
    assert!(
        out.status.success(),
        "{at}: exited {} after {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        started.elapsed()
    );
    let mut expected: Vec<String> = block
        .text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# => "))
        .map(str::to_owned)
        .collect();
    if let Some(shown) = &block.output {
        expected.extend(
            shown
                .lines()
                .filter(|l| {
                    let b = l.as_bytes();
                    b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' '
                })
                .map(str::to_owned),
        );
    }
    for want in expected {
        assert!(
            stdout.contains(&want),
            "{at}: the output has no `{want}`\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
}

#[test]
fn the_marked_doc_blocks_run_as_written() {
    let port = free_port();
    let (dir, bin) = workdir(port);
    let mut servers = Vec::new();
    let mut ran = 0;
    for block in shell_blocks() {
        match marker(&block) {
            Some("doctest-server") => servers.push(start_server(&block, dir.path(), &bin, port)),
            Some("doctest") => {
                assert!(
                    !servers.is_empty() || !block.text.contains("send"),
                    "{}:{}: a send before any server block",
                    block.file,
                    block.line
                );
                run_block(&block, dir.path(), &bin, port);
                ran += 1;
            }
            Some(other) => panic!("{}:{}: unknown marker `{other}`", block.file, block.line),
            None => {}
        }
    }
    assert!(ran >= 4, "only {ran} doc blocks ran");
    // What the README says the user sees: the event, routed through the plugin, in the file.
    let audit = dir.path().join("data/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains(r#""type":"payment.received""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "data/events.jsonl has no payment.received: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(servers);
}
