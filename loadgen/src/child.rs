//! A server under test, run as its own process: started, its address read from the first stdout
//! line (`listening on http://ADDR`), the rest of stdout drained so the pipe never fills, stderr
//! sent to a log file, and stopped with SIGTERM (SIGKILL if it does not exit in time).

use anyhow::{Context as _, bail};
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `command` with stderr going to `log`, and waits for its address.
    pub(crate) fn start(
        name: &'static str,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let stderr =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = tx.send(lines.read_line(&mut first).map(|_| first));
            // Anything the server prints later is drained and dropped.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let mut server = Self {
            name,
            child,
            log: log.to_owned(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("cannot read {name}'s stdout: {e}{}", server.log_tail()),
            Err(_) => bail!(
                "{name} printed no address within {START_TIMEOUT:?}{}",
                server.log_tail()
            ),
        };
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            bail!(
                "{name}'s first stdout line should be `listening on http://ADDR`, was {line:?}{}",
                server.log_tail()
            );
        };
        server.addr = addr
            .parse()
            .with_context(|| format!("{name} printed a bad address {addr:?}"))?;
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait; reports how the server exited and how long it took.
    pub(crate) fn stop(mut self) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        self.terminate()?;
        let deadline = started + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                let status = self.child.wait()?;
                bail!(
                    "{} ignored SIGTERM for {STOP_TIMEOUT:?}; killed ({status}){}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run `kill`")?;
        anyhow::ensure!(status.success(), "`kill -TERM` failed: {status}");
        Ok(())
    }

    /// The end of the server's stderr, to explain a failure.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "\n--- {} stderr ({}) ---\n{tail}",
                self.name,
                self.log.display()
            )
        }
    }
}

impl Drop for Server {
    /// On early exit (error, panic): make sure no server outlives the benchmark.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
