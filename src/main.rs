//! `agora`: parse the command line, load configuration, start telemetry, and hand
//! over to the library.

use agora::cli::{AdminCommand, Cli, Command, ConfigCommand};
use agora::{Target, app};
use agora_kit::Config;
use agora_kit::token::Role;
use std::io::Write;

use clap::Parser;

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
    let config = Config::from_env()?;
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
            let running = app::start(config, target, shutdown).await?;
            running.wait().await
        }
        Command::Migrate { target } => app::migrate(&config, target).await,
        Command::Admin {
            command: AdminCommand::Grant { email, role },
        } => {
            let role = Role::parse(&role).expect("clap restricts the role");
            let db = agora_user::open_db(config.database(agora_kit::ServiceName::User)).await?;
            // A role change announces nothing, so no relay needs to run here.
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
        } => {
            let plan = agora::seed::Plan {
                users,
                articles,
                follows,
            };
            println!("{}", agora::seed::run(&config, plan).await?);
            Ok(())
        }
        Command::Openapi | Command::Config { .. } => unreachable!("handled above"),
    }
}
