//! Child processes the benchmarks start and always stop: a redis-server of their own, and
//! `shopcue run` sidecars (this executable re-run). Each is killed when dropped (every exit
//! path, an error or a panic of the bench included) and, should the bench itself be killed,
//! by the kernel when its parent dies. Each runs in a process group of its own, so Ctrl-C
//! at the terminal reaches the bench alone, which then stops its children in order.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::proxy_load::free_port;

/// Puts the child in a process group of its own, and asks the kernel to SIGKILL it when
/// the thread that started it exits (the bench killed with SIGKILL runs no destructor).
/// Start children from the async runtime's worker threads, which live as long as the
/// bench, never from a short-lived blocking thread.
fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl(2) with plain integers is async-signal-safe; the closure touches no
    // memory of the parent between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A redis-server of its own on a free loopback port (no persistence), killed when dropped.
pub struct RedisProcess {
    pub url: String,
    child: std::process::Child,
}

impl RedisProcess {
    pub fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .context("starting redis-server (scripts/setup.sh bench installs it)")?;
        let url = format!("redis://127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { url, child })
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `shopcue run` child on a free loopback port, its stderr (the log) in a file.
pub struct SidecarProcess {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    pub child: tokio::process::Child,
}

impl SidecarProcess {
    /// This executable with `args` (starting with `run`) and `--listen`, `env` added to
    /// the bench's environment, stderr to `log`.
    pub fn spawn(
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file);
        die_with_parent(&mut cmd);
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            port,
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some("<name> exited (<status>): <last log line>")` once it has exited by itself.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last = log.lines().last().unwrap_or("");
        Some(format!("{} exited ({status}): {last}", self.name))
    }

    /// SIGTERM: the sidecar drains (its open cues end and are published) and exits.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) with plain integers, to our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `grace` for it to exit (after [`Self::terminate`]); killed past it.
    /// `None` when it had to be killed.
    pub async fn wait_or_kill(&mut self, grace: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}
