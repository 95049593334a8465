//! Where this server may send a request a tenant pointed it at (SSRF).
//!
//! A tenant's base URL (an `openai_compatible` LLM, an on-prem speech
//! server) is parsed and normalised the way an HTTP client reads it (the
//! WHATWG rules of the `url` crate: dot segments folded, percent-encoding
//! decoded in the host, IPv4 in hex, octal or one number, IPv6 with an IPv4
//! inside) before anything is compared. Then:
//!
//! - the operator's allow-list (`VOXFLOW_LLM_ALLOWED_URLS`), when set, is
//!   the only way in, prefix by prefix on the normalised form;
//! - without it, a literal address inside the host's networks (loopback,
//!   private, link-local, CGNAT, the cloud metadata addresses) is refused,
//!   and a host name is checked when it is resolved, at connect time, by
//!   [`GuardedResolver`]: a name that resolves to such an address is
//!   refused as well (DNS rebinding included, since it is the connection's
//!   own lookup that is filtered).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// A base URL as it will be requested, or why it cannot be one.
pub fn normalise(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw.trim()).map_err(|_| "is not a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment");
    }
    if url.host().is_none() {
        return Err("must name a host");
    }
    Ok(url)
}

/// Whether `ip` is an address of the host's own networks rather than of
/// the internet: what a tenant must not reach through this server.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0 reaches the local host
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: the cloud metadata service
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10 (Alibaba's metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || ip.is_multicast()
        || a >= 240 // reserved and broadcast
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    ip.is_unspecified()
        || ip.is_loopback()
        // ::a.b.c.d, the deprecated IPv4-compatible form
        || (s[..6] == [0; 6] && internal_v4(embedded(s[6], s[7])))
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && internal_v4(embedded(s[6], s[7])))
        || (s[0] == 0x2002 && internal_v4(embedded(s[1], s[2])))
        || (s[0] == 0x2001 && s[1] == 0) // Teredo hides its IPv4 address
        || (s[0] & 0xfe00) == 0xfc00 // unique local, AWS's fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local
        || (s[0] & 0xff00) == 0xff00 // multicast
}

/// One entry of the allow-list: a normalised URL prefix; `:*` for the port
/// allows any port of that host (`http://127.0.0.1:*` for local stand-ins).
#[derive(Debug, Clone)]
struct Prefix {
    url: Url,
    any_port: bool,
}

impl Prefix {
    fn parse(raw: &str) -> Result<Prefix, String> {
        let raw = raw.trim();
        let authority_end = raw
            .find("://")
            .map(|i| i + 3 + raw[i + 3..].find('/').unwrap_or(raw.len() - i - 3));
        let (text, any_port) = match authority_end {
            Some(end) if raw[..end].ends_with(":*") => {
                (format!("{}{}", &raw[..end - 2], &raw[end..]), true)
            }
            _ => (raw.to_string(), false),
        };
        let url = normalise(&text).map_err(|why| format!("{raw:?} {why}"))?;
        Ok(Prefix { url, any_port })
    }

    /// Same scheme, host and port, and the path under the prefix's by
    /// whole segments (`/v1` covers `/v1` and `/v1/x`, not `/v10`).
    fn covers(&self, url: &Url) -> bool {
        if url.scheme() != self.url.scheme() || url.host() != self.url.host() {
            return false;
        }
        if !self.any_port && url.port_or_known_default() != self.url.port_or_known_default() {
            return false;
        }
        let base = self.url.path().trim_end_matches('/');
        let path = url.path().trim_end_matches('/');
        path.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn host(&self) -> Option<String> {
        self.url.host_str().map(str::to_ascii_lowercase)
    }
}

/// The operator's allow-list, parsed once.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<Prefix>);

impl AllowList {
    /// A comma-separated list of URL prefixes; blank entries are skipped.
    pub fn parse(raw: &str) -> Result<AllowList, String> {
        raw.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Prefix::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a tenant may point this server at `raw`. The URL is
    /// normalised first, so `…/v1/../../admin` is judged as `/admin` and
    /// `0x7f000001` as `127.0.0.1`.
    pub fn allows(&self, raw: &str) -> bool {
        let Ok(url) = normalise(raw) else {
            return false;
        };
        if !self.is_empty() {
            return self.0.iter().any(|p| p.covers(&url));
        }
        match url.host() {
            Some(Host::Ipv4(ip)) => !internal_v4(ip),
            Some(Host::Ipv6(ip)) => !internal_v6(ip),
            // Checked again, on what it resolves to, when connecting.
            Some(Host::Domain(_)) => true,
            None => false,
        }
    }

    /// The host names of the prefixes: the operator vouched for what they
    /// resolve to.
    fn hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().filter_map(Prefix::host)
    }
}

/// The DNS resolver of the provider client: it drops every internal
/// address a name resolves to, unless the name is one the operator set
/// (a provider base URL or an allow-list entry). A name left with no
/// address fails like an unreachable host, so a tenant learns nothing
/// about what answers inside the network.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    trusted_hosts: Arc<Vec<String>>,
}

impl GuardedResolver {
    /// `operator_urls`: the provider base URLs the operator configured;
    /// their hosts and the allow-list's resolve unfiltered.
    pub fn new<'a>(
        allow: &AllowList,
        operator_urls: impl IntoIterator<Item = &'a str>,
    ) -> GuardedResolver {
        let mut hosts: Vec<String> = operator_urls
            .into_iter()
            .filter_map(|u| Url::parse(u.trim()).ok())
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .chain(allow.hosts())
            .collect();
        hosts.sort();
        hosts.dedup();
        GuardedResolver {
            trusted_hosts: Arc::new(hosts),
        }
    }

    fn trusts(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.trusted_hosts.contains(&name)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the host resolves to no address this server may reach")]
struct NoReachableAddress;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let trusted = self.trusts(name.as_str());
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| trusted || !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(
                    Box::new(NoReachableAddress) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> AllowList {
        AllowList::default()
    }

    #[test]
    fn internal_addresses_in_every_literal_form_are_refused_by_default() {
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://0x7f000001/v1",
            "http://2130706433/v1",
            "http://0177.0.0.1/v1",
            "http://127.1/v1",
            "http://%31%32%37.0.0.1/v1",
            "http://[::1]/v1",
            "http://[::ffff:127.0.0.1]/v1",
            "http://[::ffff:7f00:1]/v1",
            "http://[64:ff9b::7f00:1]/v1",
            "http://[2002:7f00:1::]/v1",
            "http://[fd00:ec2::254]/v1",
            "http://[fe80::1]/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200/v1",
            "http://10.0.0.5/v1",
            "http://172.16.0.1/v1",
            "http://192.168.1.1/v1",
            "http://0.0.0.0:8080/v1",
            "ftp://example.com/v1",
            "http://user:pw@example.com/v1",
            "http://example.com/v1?x=1",
            "not a url",
        ] {
            assert!(!open().allows(url), "{url} must be refused");
        }
        assert!(open().allows("https://api.example.com/v1"));
        assert!(open().allows("http://8.8.8.8/v1"));
        assert!(open().allows("http://[2606:4700::1111]/v1"));
    }

    #[test]
    fn the_allow_list_matches_the_normalised_url_by_whole_segments() {
        let list =
            AllowList::parse(" http://10.0.0.5:8000/v1/ , https://llm.internal,http://127.0.0.1:*")
                .unwrap();
        assert!(list.allows("http://10.0.0.5:8000/v1"));
        assert!(list.allows("http://10.0.0.5:8000/v1/x/"));
        assert!(list.allows("http://0x0a000005:8000/v1"));
        assert!(list.allows("https://LLM.internal/openai/v1"));
        assert!(list.allows("https://llm.internal:443/v1"));
        assert!(list.allows("http://127.0.0.1:41234/v1"));
        assert!(list.allows("http://2130706433:41234/v1"));
        for bad in [
            "http://10.0.0.5:8000/v10",
            "http://10.0.0.5:8000/v1/../../internal-admin",
            "http://10.0.0.5:8000/v1/%2e%2e/%2e%2e/internal-admin",
            "http://10.0.0.5:8001/v1",
            "http://10.0.0.5/v1",
            "https://llm.internal.evil.com/v1",
            "http://llm.internal/v1",
            "http://[::1]:41234/v1",
            "https://api.example.com/v1",
        ] {
            assert!(!list.allows(bad), "{bad} must be refused");
        }
        assert!(AllowList::parse("not a url").is_err());
        assert!(AllowList::parse("").unwrap().is_empty());
    }

    #[test]
    fn operator_hosts_are_trusted_by_name_only() {
        let list = AllowList::parse("https://llm.internal/v1").unwrap();
        let r = GuardedResolver::new(&list, ["https://api.twilio.com", "bad url"]);
        assert!(r.trusts("llm.internal"));
        assert!(r.trusts("API.twilio.com."));
        assert!(!r.trusts("localhost"));
    }
}
