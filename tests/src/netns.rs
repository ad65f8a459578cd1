//! Network namespaces made with `ip netns`, removed on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by a test. Dropping it deletes the namespace and everything
/// in it (interfaces, addresses, iptables rules).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

// === impl Netns ===

impl Netns {
    /// Creates a namespace with a unique name derived from `label`, with `lo` up.
    pub fn new(label: &str) -> std::io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{label}-{}-{n}", std::process::id());
        ip(["netns", "add", name.as_str()])?;
        let ns = Self { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `setns` or `--network-namespace`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> args...`, failing with ip's stderr.
    pub fn ip<I, S>(&self, args: I) -> std::io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        checked(cmd)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a command inside the namespace and returns its stdout, failing on a non-zero exit.
    pub fn run<I, S>(&self, program: &str, args: I) -> std::io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        checked(cmd)
    }

    /// Gives processes started with [`Self::command`] their own `/etc/resolv.conf`
    /// (`ip netns exec` bind-mounts `/etc/netns/<name>/resolv.conf` over it).
    pub fn set_resolv_conf(&self, contents: &str) -> std::io::Result<()> {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(format!("{dir}/resolv.conf"), contents)
    }

    /// Sets a sysctl inside the namespace (`net.ipv6.conf.eth0.accept_dad` style key).
    pub fn sysctl(&self, key: &str, value: &str) -> std::io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.enter(move || std::fs::write(path, value))
    }

    /// Runs `f` on a new thread that has entered this namespace. Sockets it creates (and
    /// processes it spawns) live in the namespace.
    pub fn spawn<F, T>(&self, f: F) -> thread::JoinHandle<std::io::Result<T>>
    where
        F: FnOnce() -> std::io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        thread::spawn(move || {
            let file = File::open(&path)?;
            setns(file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            f()
        })
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn enter<F, T>(&self, f: F) -> std::io::Result<T>
    where
        F: FnOnce() -> std::io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(f)
            .join()
            .map_err(|_| std::io::Error::other("thread inside the namespace panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
        let _ = ip(["netns", "del", self.name.as_str()]);
    }
}

/// Links two namespaces with a veth pair and brings both ends up. Addresses are given with
/// their prefix (`10.0.0.1/24`, `fd00::1/64`); IPv6 ones skip duplicate address detection so
/// they are usable at once.
pub fn link(
    a: &Netns,
    a_if: &str,
    a_addrs: &[&str],
    b: &Netns,
    b_if: &str,
    b_addrs: &[&str],
) -> std::io::Result<()> {
    let tmp = format!("vt{}", NEXT.fetch_add(1, Ordering::Relaxed));
    ip([
        "link",
        "add",
        &tmp,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(["link", "set", &tmp, "name", a_if])?;
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        // No duplicate address detection: addresses (link-local ones too) and their routes
        // exist as soon as the link is up, so tests see a settled state.
        ns.sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")?;
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(["-6", "addr", "add", addr, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(["addr", "add", addr, "dev", ifname])?;
            }
        }
        ns.ip(["link", "set", ifname, "up"])?;
    }
    Ok(())
}

fn ip<I, S>(args: I) -> std::io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args);
    checked(cmd)
}

/// Runs a command; a non-zero exit becomes an error carrying the command and its stderr.
pub fn checked(mut cmd: Command) -> std::io::Result<String> {
    let out: Output = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(std::io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn namespaces_are_isolated_and_linked_by_veth() {
        if !crate::require_root("namespaces_are_isolated_and_linked_by_veth") {
            return;
        }
        let a = Netns::new("nsa").unwrap();
        let b = Netns::new("nsb").unwrap();
        link(&a, "eth0", &["10.77.0.1/24"], &b, "eth0", &["10.77.0.2/24"]).unwrap();

        let server = b.spawn(|| {
            let l = TcpListener::bind("10.77.0.2:7000")?;
            let (mut s, peer) = l.accept()?;
            s.write_all(peer.ip().to_string().as_bytes())?;
            Ok(())
        });
        let seen = a
            .enter(|| {
                let mut s = connect_retry("10.77.0.2:7000")?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf)
            })
            .unwrap();
        server.join().unwrap().unwrap();
        assert_eq!(seen, "10.77.0.1");

        // The address exists only inside the namespaces, not on the host.
        assert!(TcpListener::bind("10.77.0.2:0").is_err());
        let name = a.name().to_string();
        drop(a);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }

    fn connect_retry(addr: &str) -> std::io::Result<TcpStream> {
        let mut last = None;
        for _ in 0..50 {
            match TcpStream::connect(addr) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no attempt")))
    }
}
