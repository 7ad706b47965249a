//! Throwaway PostgreSQL clusters for the gateway's tests and benchmarks, started from the
//! system's server binaries (Debian's `postgresql` package: `/usr/lib/postgresql/N/bin`), each
//! in a temp dir of its own, reachable only through a unix socket in that dir (no TCP port, so
//! clusters never collide), with durability on: `fsync`, `synchronous_commit` and
//! `full_page_writes` are what a production server has, because the tests that use them are
//! about what survives a crash. A cluster is stopped (immediately) and deleted when dropped.
//!
//! `initdb` refuses to run as root: as root, every server command runs as the `postgres` user
//! (`runuser`), which owns the cluster's dir; as anyone else, as that user. `initdb` runs once
//! per machine and PostgreSQL version into a template under the system temp dir; each cluster
//! starts from a copy of it (a copy takes tens of milliseconds, `initdb` about two seconds).
//!
//! This crate never decides what a test asserts; it only starts, stops, crashes, replicates
//! and promotes servers, and runs `psql` for checks.

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The port number in every cluster's socket name. Clusters have a socket dir each, so they
/// can all use the same number.
const PORT: u16 = 5432;

/// The user that owns the clusters when the process runs as root.
const SERVER_USER: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb in $PG_BIN and \
         /usr/lib/postgresql/*/bin); install Debian's `postgresql` package"
    )]
    NoServer,
    #[error("running as root, but there is no `{SERVER_USER}` user to run the server as")]
    NoServerUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("the server did not {what} within {seconds} s; its log ends with:\n{log}")]
    Timeout {
        what: &'static str,
        seconds: u64,
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How to stop a server (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Waits for nothing, writes no checkpoint: the next start runs crash recovery. What a
    /// power cut or a kill -9 of the whole server looks like to the database files.
    Immediate,
    /// Disconnects the clients, checkpoints, exits.
    Fast,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Fast => "fast",
        }
    }
}

/// Extra `postgresql.conf` lines for one cluster, e.g. `("synchronous_standby_names", "'*'")`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub settings: Vec<(String, String)>,
}

impl Options {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One running (or stopped) throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    root: tempfile::TempDir,
    server: Server,
}

/// Where the binaries are and who runs them.
#[derive(Debug, Clone)]
struct Server {
    bin: PathBuf,
    /// `Some(user)`: commands run as that user through `runuser` (the process is root).
    run_as: Option<String>,
}

impl Server {
    fn find() -> Result<Self, Error> {
        let bin = server_bin().ok_or(Error::NoServer)?;
        let run_as = if rustix::process::geteuid().is_root() {
            let known = Command::new("id")
                .arg("-u")
                .arg(SERVER_USER)
                .output()
                .map_err(io("running id"))?;
            if !known.status.success() {
                return Err(Error::NoServerUser);
            }
            Some(SERVER_USER.to_owned())
        } else {
            None
        };
        Ok(Self { bin, run_as })
    }

    /// A command for one of the server's binaries (or `cp`), as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = if program.contains('/') || !self.bin.join(program).exists() {
            PathBuf::from(program)
        } else {
            self.bin.join(program)
        };
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn chown_to_server(&self, path: &Path) -> Result<(), Error> {
        if let Some(user) = &self.run_as {
            run(Command::new("chown").arg("-R").arg(user).arg(path))?;
        }
        Ok(())
    }

    fn version(&self) -> Result<String, Error> {
        let out = run(self.command("initdb").arg("--version"))?;
        Ok(out
            .split_whitespace()
            .last()
            .unwrap_or("unknown")
            .to_owned())
    }
}

/// `$PG_BIN`, else the newest `/usr/lib/postgresql/N/bin` holding `initdb`.
fn server_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Runs a command; its stdout on success, an error with its output otherwise.
fn run(command: &mut Command) -> Result<String, Error> {
    let shown = format!("{command:?}");
    let out: Output = command.output().map_err(io(format!("starting {shown}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: shown,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// The initdb'd template for this PostgreSQL version, made once per machine: initdb into a
/// fresh dir, then renamed into place, so concurrent test processes never see half of one.
fn template(server: &Server) -> Result<PathBuf, Error> {
    let uid = rustix::process::geteuid().as_raw();
    let dir =
        std::env::temp_dir().join(format!("throwaway-pg-template-{uid}-{}", server.version()?));
    if dir.join("PG_VERSION").exists() {
        return Ok(dir);
    }
    let staging = tempfile::Builder::new()
        .prefix("throwaway-pg-initdb-")
        .tempdir()
        .map_err(io("creating a temp dir for initdb"))?;
    server.chown_to_server(staging.path())?;
    let data = staging.path().join("data");
    run(server
        .command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
        // The template is copied, never served: its files need not reach the disk now.
        .arg("--no-sync"))?;
    match fs::rename(&data, &dir) {
        Ok(()) => Ok(dir),
        // Another process made it first: use theirs.
        Err(_) if dir.join("PG_VERSION").exists() => Ok(dir),
        Err(e) => Err(io(format!("moving the template to {}", dir.display()))(e)),
    }
}

impl Cluster {
    /// A new cluster with the default settings, started.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(&Options::default())
    }

    /// A new cluster with extra settings, started.
    pub fn start_with(options: &Options) -> Result<Self, Error> {
        let server = Server::find()?;
        let template = template(&server)?;
        let root = new_root(&server)?;
        let data = root.path().join("data");
        run(server.command("cp").arg("-a").arg(&template).arg(&data))?;
        let cluster = Self { root, server };
        cluster.configure(options)?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started. For synchronous
    /// replication, start the primary with `synchronous_standby_names = '*'`.
    pub fn standby_of(primary: &Cluster, options: &Options) -> Result<Self, Error> {
        let server = primary.server.clone();
        let root = new_root(&server)?;
        let data = root.path().join("data");
        run(server
            .command("pg_basebackup")
            .arg("-D")
            .arg(&data)
            .arg("-h")
            .arg(primary.socket_dir())
            .arg("-p")
            .arg(PORT.to_string())
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast"]))?;
        let cluster = Self { root, server };
        cluster.configure(options)?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// Writes this cluster's settings after whatever the data dir's config already has
    /// (later lines win).
    fn configure(&self, options: &Options) -> Result<(), Error> {
        let socket = self.socket_dir().display().to_string();
        let mut lines = vec![
            ("listen_addresses".to_owned(), "''".to_owned()),
            ("unix_socket_directories".to_owned(), format!("'{socket}'")),
            ("port".to_owned(), PORT.to_string()),
            ("fsync".to_owned(), "on".to_owned()),
            ("synchronous_commit".to_owned(), "on".to_owned()),
            ("full_page_writes".to_owned(), "on".to_owned()),
            ("max_connections".to_owned(), "200".to_owned()),
            ("wal_level".to_owned(), "replica".to_owned()),
            ("max_wal_senders".to_owned(), "5".to_owned()),
            ("hot_standby".to_owned(), "on".to_owned()),
            // A standby's copy of the primary's config would otherwise make it, once
            // promoted, wait for a standby of its own at every commit.
            ("synchronous_standby_names".to_owned(), "''".to_owned()),
        ];
        lines.extend(options.settings.iter().cloned());
        let conf = self.data_dir().join("postgresql.conf");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io(format!("opening {}", conf.display())))?;
        let mut text = String::from("\n# throwaway-pg\n");
        for (name, value) in lines {
            text.push_str(&format!("{name} = {value}\n"));
        }
        file.write_all(text.as_bytes())
            .map_err(io(format!("writing {}", conf.display())))
    }

    /// The dir holding the server's unix socket (the `host` to connect to).
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn port(&self) -> u16 {
        PORT
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// libpq key/value connection string to `database` as the superuser.
    pub fn conninfo(&self, database: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={database}",
            self.socket_dir().display()
        )
    }

    /// Creates a database (owned by the superuser).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        run(self
            .server
            .command("createdb")
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(PORT.to_string())
            .args(["-U", "postgres"])
            .arg(name))
        .map(drop)
    }

    /// Runs SQL with `psql` (unaligned, tuples only) and returns what it printed.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        run(self
            .server
            .command("psql")
            .arg("-X")
            .arg("-q")
            .args(["-v", "ON_ERROR_STOP=1", "-A", "-t"])
            .arg("-h")
            .arg(self.socket_dir())
            .arg("-p")
            .arg(PORT.to_string())
            .args(["-U", "postgres", "-d", database, "-c"])
            .arg(sql))
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), Error> {
        self.pg_ctl(["start", "-w", "-t", "60"].map(OsStr::new))
            .map_err(|e| self.with_log(e, "start"))
    }

    /// Stops the server.
    pub fn stop(&self, mode: StopMode) -> Result<(), Error> {
        self.pg_ctl(["stop", "-w", "-t", "60", "-m", mode.flag()].map(OsStr::new))
    }

    /// Stops the server in `mode` and starts it again.
    pub fn restart(&self, mode: StopMode) -> Result<(), Error> {
        self.pg_ctl(["restart", "-w", "-t", "60", "-m", mode.flag()].map(OsStr::new))
            .map_err(|e| self.with_log(e, "restart"))
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), Error> {
        self.pg_ctl(["promote", "-w", "-t", "60"].map(OsStr::new))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.psql("postgres", "SELECT pg_is_in_recovery()")?.trim() == "f" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "leave recovery",
                    seconds: 60,
                    log: self.log_tail(),
                });
            }
            std::thread::yield_now();
        }
    }

    fn pg_ctl<'a>(&self, args: impl IntoIterator<Item = &'a OsStr>) -> Result<(), Error> {
        let mut command = self.server.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(args);
        run(&mut command).map(drop)
    }

    fn with_log(&self, error: Error, what: &str) -> Error {
        match error {
            Error::Command {
                command,
                status,
                output,
            } => Error::Command {
                command,
                status,
                output: format!(
                    "{output}\n({what}) server log ends with:\n{}",
                    self.log_tail()
                ),
            },
            other => other,
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A temp dir the server's user owns (its socket and data go there).
fn new_root(server: &Server) -> Result<tempfile::TempDir, Error> {
    let root = tempfile::Builder::new()
        .prefix("throwaway-pg-")
        .tempdir()
        .map_err(io("creating a temp dir for a cluster"))?;
    server.chown_to_server(root.path())?;
    Ok(root)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nothing to keep: no checkpoint, no waiting for clients.
        let _ = self.stop(StopMode::Immediate);
    }
}
