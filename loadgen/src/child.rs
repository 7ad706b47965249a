//! A server under test, run as its own process: started, its address read from the first
//! stdout line (`listening on http://ADDR`), and stopped with SIGTERM when dropped.

use anyhow::{Context as _, bail};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(mut command: Command) -> anyhow::Result<Self> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("cannot read the server's first line")?;
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            bail!("unexpected first line from {command:?}: {line:?}");
        };
        let addr = addr
            .parse()
            .with_context(|| format!("bad address {addr:?}"))?;
        Ok(Self { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; SIGKILL if it does not exit in time.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
