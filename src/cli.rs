//! The command line: `serve`, `migrate`, `admin grant`, `seed`, `openapi`,
//! `config check`.

use clap::{Parser, Subcommand};

use crate::app::Target;

#[derive(Debug, Parser)]
#[command(
    name = "agora",
    version,
    about = "agora: user, auth, post and notification services behind one gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services and/or the gateway (default: everything, on SQLite files).
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        target: Target,
    },
    /// Create schemas and apply migrations, then exit.
    Migrate {
        #[arg(long, value_enum, default_value = "all")]
        target: Target,
    },
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI 3.1 document of the REST surface.
    Openapi,
    /// Fill empty databases with generated accounts, follows, articles and favorites (password123).
    Seed {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 1000)]
        articles: usize,
        /// Accounts each seeded user follows.
        #[arg(long, default_value_t = 20)]
        follows: usize,
        /// Articles each seeded user favorites.
        #[arg(long, default_value_t = 10)]
        favorites: usize,
    },
    /// The event bus.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give an existing account a role.
    Grant {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["user", "moderator", "admin"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The dead-letter queues of the bus consumers.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// One consumer (`notification`, `post`, `auth`); every one when absent.
        #[arg(long, global = true)]
        consumer: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show events that exhausted their attempts, with their last error.
    List,
    /// Put every dead letter back in the work queue for another round of attempts.
    Redrive,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the environment and list every problem.
    Check,
}
