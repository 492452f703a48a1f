//! Why the hub ends an agent's WebSocket: one variant per reason, each with its RFC 6455 close
//! code (§7.4.1), so the code and the words the agent logs cannot disagree.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The agent closed, or the socket went away: nothing is sent.
    Clean,
    /// The hub is stopping (1001); the agent reconnects.
    GoingAway,
    /// Not the protocol (1002): a text frame, a second hello, a broken frame.
    Protocol(String),
    /// A frame that does not decode (1007).
    Invalid(String),
    /// Against policy (1008): too many frames, silence, a newer connection for the host.
    Policy(String),
    /// A frame over the hub's limit (1009).
    TooBig { limit: usize },
    /// The history store could not keep up (1013): the agent resends what was not
    /// acknowledged.
    TryAgain(String),
}

impl Close {
    /// The close code sent; `None` for [`Close::Clean`].
    pub fn code(&self) -> Option<u16> {
        Some(match self {
            Self::Clean => return None,
            Self::GoingAway => 1001,
            Self::Protocol(_) => 1002,
            Self::Invalid(_) => 1007,
            Self::Policy(_) => 1008,
            Self::TooBig { .. } => 1009,
            Self::TryAgain(_) => 1013,
        })
    }

    /// A read error of the WebSocket layer: an oversized message or frame is
    /// [`Close::TooBig`] (tungstenite's capacity error, found by type, not by its wording),
    /// anything else a protocol error.
    pub fn from_read_error(e: axum::Error, limit: usize) -> Self {
        use tungstenite::error::{CapacityError, Error};
        let inner = e.into_inner();
        match inner.downcast_ref::<Error>() {
            Some(Error::Capacity(
                CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
            )) => Self::TooBig { limit },
            _ => Self::Protocol(format!("read error: {inner}")),
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clean => f.write_str("closed"),
            Self::GoingAway => f.write_str("the hub is stopping"),
            Self::Protocol(r) | Self::Invalid(r) | Self::Policy(r) | Self::TryAgain(r) => {
                f.write_str(r)
            }
            Self::TooBig { limit } => write!(f, "frame too large (limit {limit} bytes)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_words() {
        assert_eq!(Close::Clean.code(), None);
        assert_eq!(Close::TooBig { limit: 1024 }.code(), Some(1009));
        assert_eq!(
            Close::TooBig { limit: 1024 }.to_string(),
            "frame too large (limit 1024 bytes)"
        );
        assert_eq!(Close::TryAgain("x".into()).code(), Some(1013));
        assert_eq!(Close::GoingAway.code(), Some(1001));
    }

    #[test]
    fn an_oversized_message_is_found_by_its_type() {
        let too_long =
            tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
                size: 2048,
                max_size: 1024,
            });
        assert_eq!(
            Close::from_read_error(axum::Error::new(too_long), 1024),
            Close::TooBig { limit: 1024 }
        );
        let other = tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::UnmaskedFrameFromClient,
        );
        assert!(matches!(
            Close::from_read_error(axum::Error::new(other), 1024),
            Close::Protocol(_)
        ));
    }
}
