//! E-mail over SMTP (lettre): STARTTLS by default, implicit TLS, or plain for a local relay.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::SendError;
use crate::alerts::config::{EmailConfig, EmailTls};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

fn err(e: impl std::fmt::Display) -> SendError {
    SendError::Email(e.to_string())
}

impl Mailer {
    pub fn new(cfg: &EmailConfig, timeout: Duration) -> Result<Self, SendError> {
        let tls = || -> Result<TlsParameters, SendError> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(ca) = &cfg.ca_file {
                let pem =
                    std::fs::read(ca).map_err(|e| err(format!("ca_file {}: {e}", ca.display())))?;
                b = b.add_root_certificate(Certificate::from_pem(&pem).map_err(err)?);
            }
            b.build_rustls().map_err(err)
        };
        let mode = match cfg.tls {
            EmailTls::Starttls => Tls::Required(tls()?),
            EmailTls::Tls => Tls::Wrapper(tls()?),
            EmailTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
            .port(cfg.port)
            .tls(mode)
            .timeout(Some(timeout));
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            transport: b.build(),
            from: cfg.from.parse().map_err(err)?,
        })
    }

    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), SendError> {
        let mut m = Message::builder().from(self.from.clone()).subject(subject);
        for t in to {
            m = m.to(t
                .parse::<Mailbox>()
                .map_err(|e| err(format!("{t:?}: {e}")))?);
        }
        let msg = m
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(err)?;
        self.transport.send(msg).await.map_err(err)?;
        Ok(())
    }
}
