//! Which challenge policy a request meets: the one its listener pins, else the first
//! `[[auth.client]]` rule its own headers match, else `default`. A reload replaces the rules and
//! the pins, never the policies: the core registered those when it was built.

use sagw_auth::{ChallengePolicy, PolicyId};
use sagw_sip::Message;

use crate::auth_config::{ClientRule, EpidMatch, ListenerAuth};
use crate::listener::ListenerId;

/// One policy as the stage uses it.
#[derive(Debug, Clone)]
pub(super) struct RoutedPolicy {
    pub(super) id: PolicyId,
    pub(super) family: ChallengePolicy,
    pub(super) name: String,
}

/// Picks the policy a request meets: the one its listener pins, else the first client rule its
/// own headers match, else `default`.
#[derive(Debug, Clone)]
pub struct PolicyRouter {
    // Filled in by `setup`, once the core has given each policy its id.
    pub(super) policies: Vec<RoutedPolicy>,
    pub(super) rules: Vec<ClientRule>,
    pub(super) listeners: Vec<ListenerAuth>,
}

impl Default for PolicyRouter {
    /// The core's own configuration for everyone (no listener or client distinctions).
    fn default() -> Self {
        PolicyRouter {
            policies: vec![RoutedPolicy {
                id: PolicyId::DEFAULT,
                family: ChallengePolicy::default(),
                name: "default".into(),
            }],
            rules: Vec::new(),
            listeners: Vec::new(),
        }
    }
}

/// The policy a request meets, as [`PolicyRouter::route`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'r> {
    /// The core's id of the policy.
    pub id: PolicyId,
    /// The challenge family (the listener's statuses over the policy's).
    pub family: ChallengePolicy,
    /// The policy's name, for logs.
    pub name: &'r str,
}

impl PolicyRouter {
    /// The same policies with other client rules and listener pins (a configuration reload; the
    /// policies they name by index are the same).
    pub fn with_rules(&self, rules: Vec<ClientRule>, listeners: Vec<ListenerAuth>) -> Self {
        PolicyRouter {
            policies: self.policies.clone(),
            rules,
            listeners,
        }
    }

    /// The core's id of the policy at `index` of
    /// [`AuthSettings::policies`](crate::auth_config::AuthSettings::policies).
    pub fn policy_id(&self, index: usize) -> Option<PolicyId> {
        self.policies.get(index).map(|p| p.id)
    }

    /// The policy for a request that came in on `listener`. Allocation-free: an index, a few
    /// header look-ups, and a regular expression only for rules that have one.
    pub fn route(&self, listener: ListenerId, msg: &Message) -> Routed<'_> {
        let la = self
            .listeners
            .get(listener.index())
            .copied()
            .unwrap_or_default();
        let index = la
            .policy
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| rule_matches(r, msg))
                    .map(|r| r.policy)
            })
            .unwrap_or(0);
        let Some(p) = self.policies.get(index).or_else(|| self.policies.first()) else {
            return Routed {
                id: PolicyId::DEFAULT,
                family: ChallengePolicy::default(),
                name: "default",
            };
        };
        Routed {
            id: p.id,
            family: ChallengePolicy {
                register: la.register.unwrap_or(p.family.register),
                other: la.other.unwrap_or(p.family.other),
            },
            name: &p.name,
        }
    }
}

fn rule_matches(rule: &ClientRule, msg: &Message) -> bool {
    let epid_ok = match rule.epid {
        EpidMatch::Any => true,
        EpidMatch::Present => has_epid(msg),
        EpidMatch::Absent => !has_epid(msg),
    };
    epid_ok
        && rule
            .user_agent
            .as_ref()
            .is_none_or(|re| msg.header("User-Agent").is_some_and(|ua| re.is_match(ua)))
}

fn has_epid(msg: &Message) -> bool {
    msg.from().is_some_and(|f| f.param("epid").is_some())
}

#[cfg(test)]
mod tests {
    use sagw_auth::ChallengeFamily;

    use super::super::setup::core_of;
    use super::*;

    fn request(from_params: &str, ua: Option<&str>) -> Message {
        let ua = ua
            .map(|u| format!("User-Agent: {u}\r\n"))
            .unwrap_or_default();
        Message::parse(format!("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1{from_params}\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{ua}Content-Length: 0\r\n\r\n").as_bytes()).expect("request")
    }

    /// Precedence: the listener's pin, else the first client rule that matches, else default; the
    /// listener's challenge statuses apply over the policy's.
    #[test]
    fn the_router_takes_the_pin_then_the_first_matching_rule_then_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            r#"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[auth]
schemes = ["ntlm", "digest"]
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
[auth.policy.ms]
schemes = ["ntlm"]
[auth.policy.md5]
schemes = ["digest"]
digest_algorithms = ["MD5"]
register_challenge = 407
[auth.policy.plain]
schemes = ["digest"]
[[auth.client]]
epid = "present"
policy = "ms"
[[auth.client]]
user_agent = "^baresip"
policy = "md5"
[[auth.client]]
epid = "absent"
user_agent = "softphone"
policy = "plain"
[auth.listener.tcp]
policy = "md5"
other_challenge = 401
"#,
            d = dir.path().display()
        );
        let (_core, router) = core_of(&text);
        let (udp, tcp) = (ListenerId(0), ListenerId(1));
        let name = |l, m: &Message| router.route(l, m).name.to_owned();
        assert_eq!(
            name(udp, &request(";epid=0123456789", Some("baresip 1.0"))),
            "ms",
            "first rule wins"
        );
        assert_eq!(
            name(udp, &request("", Some("BareSIP v1.0.0"))),
            "md5",
            "case-insensitive"
        );
        assert_eq!(
            name(udp, &request("", Some("My Softphone 2"))),
            "plain",
            "every condition holds"
        );
        assert_eq!(name(udp, &request(";epid=01", Some("softphone"))), "ms");
        assert_eq!(name(udp, &request("", None)), "default", "no rule matches");
        assert_eq!(name(ListenerId::OUTBOUND, &request("", None)), "default");
        let pinned = router.route(tcp, &request(";epid=0123456789", None));
        assert_eq!(pinned.name, "md5", "the listener's pin beats the rules");
        assert_eq!(
            pinned.family.register,
            ChallengeFamily::Proxy,
            "the policy's status"
        );
        assert_eq!(
            pinned.family.other,
            ChallengeFamily::Www,
            "the listener's over the policy's"
        );
    }
}
