//! Where email goes: an SMTP server through lettre, or — the embedded default — a
//! mailbox folder of RFC 5322 `.eml` files a developer can open. Both render the
//! same message, so what the folder shows is what SMTP would have sent.

use std::path::PathBuf;
use std::time::Duration;

use agora_kit::config::Secret;
use agora_kit::events::bus::BoxFuture;
use anyhow::Context;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// One email ready to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The job id: the `Message-ID` and the mailbox file name, so a retried job
    /// is recognisably the same message.
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Sends email. A second implementation exists for real (SMTP vs the mailbox
/// folder), and tests inject failing ones, hence the trait object.
pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// The RFC 5322 message for `email`.
pub fn render(from: &Mailbox, email: &OutgoingEmail) -> anyhow::Result<Message> {
    let to: Mailbox = email
        .to
        .parse()
        .with_context(|| format!("`{}` is not an email address", email.to))?;
    Ok(Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&email.subject)
        .message_id(Some(format!("<{}@agora>", email.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())?)
}

/// Delivers through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// Builds the transport from lettre's URL syntax (`smtp://host:25`,
    /// `smtps://user:pass@host`, `smtp://host:587?tls=required`). Call inside the
    /// runtime: the connection pool spawns its reaper task when built.
    pub fn new(url: &Secret, from: Mailbox) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            // The URL may hold a password: say what failed, not the value.
            .map_err(|_| anyhow::anyhow!("the SMTP URL is not usable"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(Self { transport, from })
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let message = render(&self.from, email)?;
            self.transport
                .send(message)
                .await
                .context("SMTP delivery failed")?;
            Ok(())
        })
    }
}

/// Writes each message as `<dir>/<id>.eml`.
pub struct MailboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl MailboxMailer {
    pub fn new(dir: PathBuf, from: Mailbox) -> Self {
        Self { dir, from }
    }
}

impl Mailer for MailboxMailer {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let bytes = render(&self.from, email)?.formatted();
            tokio::fs::create_dir_all(&self.dir)
                .await
                .with_context(|| format!("creating {}", self.dir.display()))?;
            // Written aside and renamed, so a reader of the folder never sees half
            // a message and a crash leaves only a dot-file behind.
            let path = self.dir.join(format!("{}.eml", email.id));
            let temp = self.dir.join(format!(".{}.eml.tmp", email.id));
            tokio::fs::write(&temp, &bytes)
                .await
                .with_context(|| format!("writing {}", temp.display()))?;
            tokio::fs::rename(&temp, &path)
                .await
                .with_context(|| format!("renaming to {}", path.display()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            id: "0190-abc".into(),
            to: "alice@example.com".into(),
            subject: "Welcome to agora, alice".into(),
            body: "Hello alice\n".into(),
        }
    }

    #[test]
    fn messages_carry_the_headers_a_mail_client_needs() {
        let from: Mailbox = "agora <no-reply@agora.invalid>".parse().unwrap();
        let text = String::from_utf8(render(&from, &email()).unwrap().formatted()).unwrap();
        for header in [
            "From: agora <no-reply@agora.invalid>",
            "To: alice@example.com",
            "Subject: Welcome to agora, alice",
            "Message-ID: <0190-abc@agora>",
            "Date: ",
        ] {
            assert!(text.contains(header), "{header} missing in\n{text}");
        }
        assert!(text.ends_with("Hello alice\r\n") || text.ends_with("Hello alice\n"));
    }

    #[test]
    fn a_bad_recipient_is_an_error_not_a_panic() {
        let from: Mailbox = "no-reply@agora.invalid".parse().unwrap();
        let mut bad = email();
        bad.to = "not an address".into();
        assert!(render(&from, &bad).is_err());
    }

    #[tokio::test]
    async fn the_mailbox_leaves_one_eml_file_per_message_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = MailboxMailer::new(
            dir.path().join("mail"),
            "no-reply@agora.invalid".parse().unwrap(),
        );
        mailer.send(&email()).await.unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["0190-abc.eml"]);
    }
}
