//! Abuse limits an agent enforces whatever its controller asks: which
//! targets it may load (checked on the assignment and again on the resolved
//! address at every connect, so DNS cannot slip past it), and how many users
//! and arrivals per second it will run.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::assignment::Assignment;

/// The agent's own limits. The default allows anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Host names the agent may load (exact, or `.example.com` for a domain).
    pub names: Vec<String>,
    /// Address ranges the agent may load.
    pub nets: Vec<IpNet>,
    pub max_users: Option<u32>,
    pub max_rps: Option<f64>,
}

impl Policy {
    /// Parses `--allow-target` values: CIDR ranges, IP addresses or host names.
    pub fn allow(&mut self, entry: &str) -> Result<(), String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("an empty --allow-target".into());
        }
        if let Ok(net) = e.parse::<IpNet>() {
            self.nets.push(net);
        } else if let Ok(ip) = e.parse::<IpAddr>() {
            self.nets.push(IpNet::from(ip));
        } else if e
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            self.names.push(e.to_ascii_lowercase());
        } else {
            return Err(format!(
                "--allow-target `{e}`: expected a CIDR range, an IP address or a host name"
            ));
        }
        Ok(())
    }

    /// Whether the agent limits what it loads (an empty list allows anything).
    pub fn restricts(&self) -> bool {
        !self.names.is_empty() || !self.nets.is_empty()
    }

    /// The allowed targets as given: ranges, then names.
    pub fn describe(&self) -> Vec<String> {
        self.nets
            .iter()
            .map(ToString::to_string)
            .chain(self.names.iter().cloned())
            .collect()
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names
            .iter()
            .any(|n| *n == host || (n.starts_with('.') && host.ends_with(n.as_str())))
    }

    /// Whether a connection to `ip` (resolved from `host`) may be opened.
    pub fn address_allowed(&self, host: &str, ip: IpAddr) -> bool {
        !self.restricts() || self.name_allowed(host) || self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks an assignment before anything is sent.
    pub fn check(&self, a: &Assignment) -> Result<(), String> {
        let host = &a.target.host;
        if self.restricts() {
            let ok = match host.parse::<IpAddr>() {
                Ok(ip) => self.address_allowed(host, ip),
                // A name not listed may still resolve into an allowed range:
                // that is checked on every connect.
                Err(_) => self.name_allowed(host) || !self.nets.is_empty(),
            };
            if !ok {
                return Err(format!(
                    "target {host} is outside this agent's --allow-target list"
                ));
            }
        }
        let users = a.most_users();
        if let Some(max) = self.max_users
            && users > max as usize
        {
            return Err(format!(
                "the assignment asks for {users} users; this agent runs at most {max} (--max-users)"
            ));
        }
        if let Some(max) = self.max_rps.filter(|_| a.has_open()) {
            // This agent's share of the peak fleet-wide rate.
            let peak = a.arrival_peak();
            if peak > max {
                return Err(format!(
                    "the assignment asks for up to {peak:.1} arrivals/s; this agent allows at most {max} (--max-rps)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_grammar_and_matching() {
        let mut p = Policy::default();
        for e in [
            "10.0.0.0/8",
            "192.0.2.7",
            "staging.example.com",
            ".internal.example",
        ] {
            p.allow(e).unwrap();
        }
        assert!(p.allow("bad host!").is_err());
        assert!(p.address_allowed("anything", "10.1.2.3".parse().unwrap()));
        assert!(p.address_allowed("x", "192.0.2.7".parse().unwrap()));
        assert!(!p.address_allowed("x", "192.0.2.8".parse().unwrap()));
        assert!(
            p.address_allowed("Staging.Example.com", "203.0.113.1".parse().unwrap()),
            "a listed name is trusted"
        );
        assert!(p.address_allowed("api.internal.example", "203.0.113.1".parse().unwrap()));
        assert!(
            !p.address_allowed("evil.example", "203.0.113.1".parse().unwrap()),
            "DNS cannot slip past the ranges"
        );
        assert!(
            Policy::default().address_allowed("x", "203.0.113.1".parse().unwrap()),
            "no list: no restriction"
        );
    }
}
