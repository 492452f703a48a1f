//! Secrets out of command lines, on the host, before a report leaves it: with command lines
//! on (`HMON_CMDLINE=1`), a job started as `train.py --wandb-key=abc` or
//! `psql postgres://me:hunter2@db` must not show its secret on every screen of the lab.
//!
//! Per argument: `NAME=VALUE` and `--NAME=VALUE` whose name looks like a secret keep the name and
//! lose the value (`***`); `--NAME VALUE` loses the next argument; a URL's password
//! (`scheme://user:password@host`) goes. A name looks like a secret when, lower-cased with `-`
//! as `_`, it contains one of [`SECRET_NAMES`] or one the configuration adds.

/// Parts of option and variable names whose values are treated as secrets.
pub const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "auth_key",
    "credential",
    "wandb_key",
    "hf_hub_token",
];

/// What replaces a secret.
pub const MASK: &str = "***";

/// The redaction rules: the built-in names and any the configuration adds.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    extra: Vec<String>,
}

impl Redactor {
    /// `extra`: more name parts (`HMON_REDACT`), matched like the built-in ones.
    pub fn new(extra: &[String]) -> Self {
        Self {
            extra: extra
                .iter()
                .map(|n| n.trim().to_ascii_lowercase().replace('-', "_"))
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    fn is_secret_name(&self, name: &str) -> bool {
        let n = name
            .trim_start_matches('-')
            .to_ascii_lowercase()
            .replace('-', "_");
        !n.is_empty()
            && (SECRET_NAMES.iter().any(|s| n.contains(s))
                || self.extra.iter().any(|s| n.contains(s.as_str())))
    }

    /// The arguments with their secrets masked.
    pub fn args<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out = Vec::new();
        let mut mask_next = false;
        for arg in args {
            if mask_next {
                mask_next = false;
                if !arg.starts_with('-') {
                    out.push(MASK.to_owned());
                    continue;
                }
            }
            if let Some((name, _value)) = arg.split_once('=') {
                if self.is_secret_name(name) {
                    out.push(format!("{name}={MASK}"));
                    continue;
                }
            } else if arg.starts_with('-') && self.is_secret_name(arg) {
                out.push(arg.to_owned());
                mask_next = true;
                continue;
            }
            out.push(url_password(arg));
        }
        out
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`, wherever it stands in `arg`.
fn url_password(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or space; credentials end at its last '@'.
        let end = after.find(['/', '?', '#', ' ']).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> String {
        Redactor::default().args(args.iter().copied()).join(" ")
    }

    #[test]
    fn each_listed_pattern_is_masked() {
        assert_eq!(
            r(&["mysql", "--password=hunter2", "db"]),
            "mysql --password=*** db"
        );
        assert_eq!(
            r(&["tool", "--token", "abc123", "--verbose"]),
            "tool --token *** --verbose"
        );
        assert_eq!(r(&["run", "api_key=xyz"]), "run api_key=***");
        assert_eq!(
            r(&[
                "env",
                "AWS_SECRET_ACCESS_KEY=wJalr",
                "AWS_REGION=eu-west-1",
                "python3"
            ]),
            "env AWS_SECRET_ACCESS_KEY=*** AWS_REGION=eu-west-1 python3"
        );
        assert_eq!(
            r(&[
                "psql",
                "postgres://me:hunter2@db.lab:5432/x?sslmode=require"
            ]),
            "psql postgres://me:***@db.lab:5432/x?sslmode=require"
        );
        assert_eq!(
            r(&["git", "clone", "https://oauth2:ghp_abc@github.com/a/b"]),
            "git clone https://oauth2:***@github.com/a/b"
        );
        assert_eq!(
            r(&["train.py", "--wandb-key=abc", "--hf_hub_token", "hf_x"]),
            "train.py --wandb-key=*** --hf_hub_token ***"
        );
        assert_eq!(
            r(&[
                "x",
                "--Api-Key=K",
                "--private-key-pass=P",
                "--passphrase",
                "p"
            ]),
            "x --Api-Key=*** --private-key-pass=*** --passphrase ***"
        );
    }

    #[test]
    fn what_is_not_a_secret_stays() {
        let plain = [
            "python3",
            "train.py",
            "--lr=3e-4",
            "--epochs",
            "10",
            "https://example.org/data",
            "user@host",
        ];
        assert_eq!(r(&plain), plain.join(" "));
        // A secret-named flag followed by another flag has no value to mask.
        assert_eq!(
            r(&["tool", "--token", "--dry-run"]),
            "tool --token --dry-run"
        );
        // A URL with a user and no password keeps its user.
        assert_eq!(r(&["ssh://alice@host/x"]), "ssh://alice@host/x");
    }

    #[test]
    fn the_list_can_be_extended() {
        let red = Redactor::new(&["Slurm-Cred".into(), " ".into()]);
        assert_eq!(
            red.args(["job", "--slurm-cred=abc", "--x=1"]).join(" "),
            "job --slurm-cred=*** --x=1"
        );
    }
}
