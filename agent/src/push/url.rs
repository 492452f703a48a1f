//! Hub addresses: `ws://` or `wss://` URLs, with the agent endpoint's path filled in.

use std::str::FromStr;

use tokio_tungstenite::tungstenite::http::Uri;

use super::PushError;

/// The hub's endpoint for agents, used when a hub URL names no path.
pub const DEFAULT_PATH: &str = "/api/agent";

/// One hub's address: a `ws://` or `wss://` URL, with [`DEFAULT_PATH`] filled in when the URL
/// names no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUrl {
    uri: Uri,
    tls: bool,
}

impl HubUrl {
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl FromStr for HubUrl {
    type Err = PushError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: &str| PushError::BadUrl {
            url: s.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("ws") => false,
            Some(scheme) if scheme.eq_ignore_ascii_case("wss") => true,
            _ => return Err(bad("must start with ws:// or wss://")),
        };
        let Some(authority) = uri.authority() else {
            return Err(bad("names no host"));
        };
        if authority.host().is_empty() {
            return Err(bad("names no host"));
        }
        // Credentials in a URL end up in logs and process listings; the token has its own
        // variable and travels in a header.
        if authority.as_str().contains('@') {
            return Err(bad(
                "must not hold credentials; set HMON_TOKEN instead (sent as Authorization: Bearer)",
            ));
        }
        let path_and_query = match uri.path_and_query() {
            Some(pq) if pq.path() != "/" && !pq.path().is_empty() => pq.as_str().to_owned(),
            Some(pq) => match pq.query() {
                Some(q) => format!("{DEFAULT_PATH}?{q}"),
                None => DEFAULT_PATH.to_owned(),
            },
            None => DEFAULT_PATH.to_owned(),
        };
        let uri = Uri::builder()
            .scheme(if tls { "wss" } else { "ws" })
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self { uri, tls })
    }
}

impl std::fmt::Display for HubUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.uri)
    }
}

/// `HMON_HUB`: comma-separated hub URLs. Empty means "do not push" (so `HMON_HUB=` in a unit
/// file turns pushing off rather than failing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubList(pub Vec<HubUrl>);

impl FromStr for HubList {
    type Err = PushError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut hubs: Vec<HubUrl> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let hub: HubUrl = part.parse()?;
            // Two connections from one host id would look to the hub like a host that keeps
            // reconnecting.
            if hubs.contains(&hub) {
                return Err(PushError::DuplicateHub(hub.to_string()));
            }
            hubs.push(hub);
        }
        Ok(Self(hubs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_get_the_default_path_and_bad_ones_are_named() {
        let u: HubUrl = "ws://hub:5000".parse().expect("parse");
        assert_eq!(u.to_string(), "ws://hub:5000/api/agent");
        let u: HubUrl = "ws://hub:5000/".parse().expect("parse");
        assert_eq!(u.to_string(), "ws://hub:5000/api/agent");
        let u: HubUrl = "WSS://hub.example/custom/path?site=b"
            .parse()
            .expect("parse");
        assert_eq!(u.to_string(), "wss://hub.example/custom/path?site=b");
        assert!(u.is_tls());
        let u: HubUrl = "ws://[::1]:9/x".parse().expect("parse");
        assert_eq!(u.uri().host(), Some("[::1]"));

        for bad in [
            "http://hub:5000",
            "hub:5000",
            "ws://",
            "ws://user:secret@hub/",
            "not a url",
        ] {
            let err = bad.parse::<HubUrl>().expect_err(bad).to_string();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn hub_lists_split_on_commas_and_refuse_duplicates() {
        let l: HubList = " ws://a:1 , wss://b/x,".parse().expect("parse");
        assert_eq!(l.0.len(), 2);
        assert_eq!(l.0[1].to_string(), "wss://b/x");
        assert_eq!("".parse::<HubList>().expect("empty").0, vec![]);
        let err = "ws://a:1,ws://a:1/api/agent"
            .parse::<HubList>()
            .expect_err("dup")
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = "ws://a:1,ftp://b"
            .parse::<HubList>()
            .expect_err("bad")
            .to_string();
        assert!(err.contains("ftp://b"), "{err}");
    }
}
