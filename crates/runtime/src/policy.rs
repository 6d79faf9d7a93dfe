//! What a function may do: its limits and the capabilities it is granted.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::dirs::Anchor;
use wasmtime_wasi::sockets::SocketAddrUse;

/// The limits and capabilities of a function, applied to each of its invocations.
///
/// The defaults grant nothing: no directories, no environment, no network.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Most bytes of linear memory, summed over the component's memories.
    ///
    /// Default 128 MiB: enough for the image workload at 2048×2048, small enough that a few
    /// dozen runaway guests cannot exhaust a small node.
    pub memory_limit: u64,
    /// Wall-clock limit of one invocation, from instantiation to return.
    ///
    /// Default 30 s: edge functions answer people waiting on them.
    pub timeout: Duration,
    /// CPU budget in Wasmtime fuel units (about one per Wasm instruction). `None` is unmetered;
    /// a budget moves the function to the metered engine, whose code is slower.
    pub fuel: Option<u64>,
    /// Host directories visible to the guest.
    pub dirs: Vec<DirMount>,
    /// Environment variables of the guest.
    pub env: Vec<(String, String)>,
    /// The guest's WASI command-line arguments (not the `args` string passed to `run`).
    pub args: Vec<String>,
    /// Which addresses the guest may use.
    pub network: NetworkPolicy,
    /// The key-value stores it may open, and the limits of its state.
    pub kv: crate::KvPolicy,
    /// The subjects it may publish to through `wasi:messaging`; none by default.
    pub messaging: crate::messaging::MessagingPolicy,
    /// Bytes kept of each of stdout and stderr; the rest is dropped and flagged.
    ///
    /// Default 64 KiB: enough for logs and a panic message, bounded so that output cannot grow
    /// the host's memory.
    pub output_limit: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            memory_limit: 128 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
            dirs: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            network: NetworkPolicy::default(),
            kv: crate::KvPolicy::default(),
            messaging: Default::default(),
            output_limit: 64 << 10,
        }
    }
}

/// A host directory exposed to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMount {
    /// The directory on the host; it must exist when the function is loaded.
    pub host: PathBuf,
    /// Where the guest sees it, such as `/data`.
    pub guest: String,
    /// Whether the guest may write.
    pub writable: bool,
    /// The held-open directory `host` lies below, if any. With one, `host` is opened beneath
    /// it at every instantiation and no symlink on the way is followed (see [`Anchor`]);
    /// without, `host` is opened as a path, as a user's own `limes run` does.
    pub anchor: Option<Anchor>,
}

impl FromStr for DirMount {
    type Err = String;

    /// Parses `HOST::GUEST` (read-write) or `HOST::GUEST:ro` (read-only), as the CLI takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, guest) = s
            .split_once("::")
            .ok_or_else(|| format!("{s:?}: expected HOST::GUEST or HOST::GUEST:ro"))?;
        let (guest, writable) = match guest.strip_suffix(":ro") {
            Some(g) => (g, false),
            None => (guest, true),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("{s:?}: both HOST and GUEST must be given"));
        }
        Ok(Self {
            host: host.into(),
            guest: guest.into(),
            writable,
            anchor: None,
        })
    }
}

/// Network allowlists. Both are empty by default: no network at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Local addresses the guest may bind (TCP and UDP) and listen on.
    pub bind: Vec<IpNet>,
    /// Remote addresses the guest may connect (TCP) or send datagrams (UDP) to.
    pub connect: Vec<IpNet>,
}

impl NetworkPolicy {
    /// Whether the guest may use any network at all.
    pub fn is_enabled(&self) -> bool {
        !(self.bind.is_empty() && self.connect.is_empty())
    }

    /// Parses an allowlist entry: an IP (`10.0.0.1`, `::1`) or a CIDR (`10.0.0.0/8`).
    pub fn parse_entry(s: &str) -> Result<IpNet, String> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block"))
    }

    /// The decision for one use of one address.
    ///
    /// An outgoing TCP connection makes the OS bind an ephemeral local port on the wildcard
    /// address; Wasmtime asks about that bind first. It is allowed whenever a connect allowlist
    /// exists, since it is part of every outgoing connection, and it gives nothing more: a TCP
    /// socket bound so still needs `bind` to listen.
    ///
    /// UDP is different: WASI 0.2 makes a guest bind explicitly before it sends, and a bound UDP
    /// socket receives from anyone with no listen step. The same wildcard bind would open a
    /// port to every host for a guest allowed only to connect, so every UDP bind needs `bind`
    /// (a UDP client lists `0.0.0.0` there, or the one local address it uses).
    pub(crate) fn allows(&self, addr: SocketAddr, used_for: SocketAddrUse) -> bool {
        let listed = |list: &[IpNet]| list.iter().any(|net| net.contains(&addr.ip()));
        match used_for {
            SocketAddrUse::UdpBind => listed(&self.bind),
            SocketAddrUse::TcpBind => {
                listed(&self.bind)
                    || (addr.ip().is_unspecified() && addr.port() == 0 && !self.connect.is_empty())
            }
            SocketAddrUse::TcpListen => listed(&self.bind),
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => listed(&self.connect),
            // Peers of a socket that was itself allowed.
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_mounts_parse() {
        let d: DirMount = "/tmp/x::/data:ro".parse().unwrap();
        assert_eq!(
            (d.host, d.guest.as_str(), d.writable),
            ("/tmp/x".into(), "/data", false)
        );
        assert!("/tmp/x::/data".parse::<DirMount>().unwrap().writable);
        assert!("/tmp/x".parse::<DirMount>().is_err());
    }

    #[test]
    fn allowlists_decide_by_ip_and_use() {
        let policy = NetworkPolicy {
            bind: vec![NetworkPolicy::parse_entry("127.0.0.1").unwrap()],
            connect: vec![NetworkPolicy::parse_entry("10.0.0.0/8").unwrap()],
        };
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(policy.allows(a("127.0.0.1:80"), SocketAddrUse::TcpBind));
        assert!(!policy.allows(a("127.0.0.2:80"), SocketAddrUse::TcpBind));
        assert!(policy.allows(a("10.1.2.3:80"), SocketAddrUse::TcpConnect));
        assert!(!policy.allows(a("127.0.0.1:80"), SocketAddrUse::TcpConnect));
        assert!(policy.allows(a("0.0.0.0:0"), SocketAddrUse::TcpBind));
        // Connect-only: no UDP port open to the world.
        assert!(!policy.allows(a("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(!NetworkPolicy::default().allows(a("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(NetworkPolicy::parse_entry("not-an-ip").is_err());
    }
}
