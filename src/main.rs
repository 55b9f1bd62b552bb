//! `agora`: parse the command line, load configuration, start telemetry, and hand
//! over to the library.

use agora::cli::{AdminCommand, Cli, Command, ConfigCommand, DlqCommand, EventsCommand};
use agora::{Target, app};
use agora_kit::Config;
use agora_kit::config::ConfigErrors;
use agora_kit::token::Role;
use agora_notification::NotificationConfig;
use std::io::Write;

use clap::Parser;

/// mimalloc: per-thread free lists suit tokio's work-stealing workers, where
/// glibc's arenas spent a quarter of the CPU of a list read (ADR 9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agora: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve {
        target: Target::All,
    });
    if let Command::Openapi = command {
        let document = serde_json::to_string_pretty(&agora_gateway::openapi_document())?;
        // A closed pipe (`agora openapi | head`) is the reader's choice, not a failure.
        return match writeln!(std::io::stdout(), "{document}") {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
            _ => Ok(()),
        };
    }
    let (config, notification_config) = load_config()?;
    if let Command::Config {
        command: ConfigCommand::Check,
    } = command
    {
        println!("configuration is valid");
        return Ok(());
    }
    let _telemetry = agora_kit::telemetry::init(config.log_format)?;
    match command {
        Command::Serve { target } => {
            let shutdown = agora_kit::shutdown::on_signal();
            let running = app::start(config, notification_config, target, shutdown).await?;
            running.wait().await
        }
        Command::Migrate { target } => app::migrate(&config, target).await,
        Command::Events {
            command: EventsCommand::Dlq { command, consumer },
        } => dead_letters(&config, command, consumer.as_deref()).await,
        Command::Admin {
            command: AdminCommand::Grant { email, role },
        } => {
            let role = Role::parse(&role).expect("clap restricts the role");
            let db = agora_user::open_db(config.database(agora_kit::ServiceName::User)).await?;
            // The change's `user.role_changed` waits in the outbox until a running
            // user service's relay sweeps it (within a second of it running).
            let store = agora_user::store::Store::new(db, Default::default());
            let email = email.trim().to_lowercase();
            match store
                .set_role(agora_user::store::RoleKey::Email(&email), role)
                .await?
            {
                Some(account) => {
                    println!("{} is now {}", account.username, role.as_str());
                    Ok(())
                }
                None => anyhow::bail!("no account with email {email}"),
            }
        }
        Command::Seed {
            users,
            articles,
            follows,
            favorites,
        } => {
            let plan = agora::seed::Plan {
                users,
                articles,
                follows,
                favorites,
            };
            println!("{}", agora::seed::run(&config, plan).await?);
            Ok(())
        }
        Command::Openapi | Command::Config { .. } => unreachable!("handled above"),
    }
}

/// Every configuration problem, the services' and the notification service's,
/// reported together.
fn load_config() -> Result<(Config, NotificationConfig), ConfigErrors> {
    match (Config::from_env(), NotificationConfig::from_env()) {
        (Ok(config), Ok(notification)) => Ok((config, notification)),
        (config, notification) => {
            let mut problems = Vec::new();
            if let Err(e) = config {
                problems.extend(e.0);
            }
            if let Err(e) = notification {
                problems.extend(e.0);
            }
            Err(ConfigErrors(problems))
        }
    }
}

/// Lists or redrives dead letters, of one consumer or of all.
async fn dead_letters(
    config: &Config,
    command: DlqCommand,
    consumer: Option<&str>,
) -> anyhow::Result<()> {
    match command {
        DlqCommand::List => {
            for (name, letters) in agora::dlq::list(config, consumer).await? {
                for letter in &letters {
                    println!(
                        "{name}\t{}\t{}\tattempts={}\t{}",
                        letter.envelope.id,
                        letter.envelope.r#type,
                        letter.attempts,
                        letter.last_error
                    );
                }
                println!("{name}: {} dead letter(s)", letters.len());
            }
        }
        DlqCommand::Redrive => {
            for (name, moved) in agora::dlq::redrive(config, consumer).await? {
                println!("{name}: {moved} dead letter(s) back in the queue");
            }
        }
    }
    Ok(())
}
