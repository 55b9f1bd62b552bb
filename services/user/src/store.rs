//! SQL for accounts and follows. One implementation serves SQLite and PostgreSQL
//! through sqlx's `Any` driver; unique-constraint violations come back as the
//! field they concern so handlers can answer with a field error.

use std::collections::HashSet;

use agora_kit::db::{Db, now_micros, unique_violation};
use agora_kit::events::relay::Wake;
use agora_kit::events::{self, outbox, types};
use agora_kit::token::Role;
use agora_proto::events::v1 as ev;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

/// A stored account. `password_hash` stays inside the user service.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: String,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub role: Role,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is already taken")]
    Taken(&'static str),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A new account, already validated and hashed.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

/// Changes to an account; `None` leaves a column as it is, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct AccountChanges {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password_hash: Option<String>,
    pub bio: Option<Option<String>>,
    pub image: Option<Option<String>>,
}

/// The `producer` of this service's events.
const PRODUCER: &str = "user";

const COLUMNS: &str =
    "id, email, username, password_hash, bio, image, role, created_at, updated_at";

fn account(row: &AnyRow) -> Result<AccountRow, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(AccountRow {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        bio: row.try_get("bio")?,
        image: row.try_get("image")?,
        role: Role::parse(&role).unwrap_or(Role::User),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn taken(err: sqlx::Error) -> StoreError {
    match unique_violation(&err) {
        Some(which) if which.contains("email") => StoreError::Taken("email"),
        Some(which) if which.contains("username") => StoreError::Taken("username"),
        _ => StoreError::Db(err),
    }
}

/// Accounts and follows.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// Pokes the outbox relay after a commit that wrote events.
    wake: Wake,
}

impl Store {
    pub fn new(db: Db, wake: Wake) -> Self {
        Self { db, wake }
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn insert_account(&self, new: NewAccount<'_>) -> Result<AccountRow, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_micros();
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO account (id, email, username, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(new.email)
        .bind(new.username)
        .bind(new.password_hash)
        .bind(new.role.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(taken)?;
        let event = events::envelope(
            types::USER_REGISTERED,
            PRODUCER,
            &ev::UserRegistered {
                user_id: id.clone(),
                username: new.username.to_owned(),
                email: new.email.to_owned(),
            },
        );
        outbox::enqueue(&mut tx, &event).await?;
        outbox::commit(tx, &self.wake).await?;
        Ok(AccountRow {
            id,
            email: new.email.to_owned(),
            username: new.username.to_owned(),
            password_hash: new.password_hash.to_owned(),
            bio: None,
            image: None,
            role: new.role,
            created_at: now,
            updated_at: now,
        })
    }

    async fn find(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<AccountRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM account WHERE {column} = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(account)
            .transpose()
    }

    pub async fn find_by_id(&self, id: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        self.find("id", id).await
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        self.find("email", email).await
    }

    /// Replaces a password hash made with older parameters by one made with the
    /// current ones, unless the password changed meanwhile; whether it did.
    pub async fn upgrade_hash(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE account SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
        )
        .bind(new_hash)
        .bind(id)
        .bind(old_hash)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether any account is an admin (the bootstrap grant happens only before).
    pub async fn has_admin(&self) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("SELECT 1 FROM account WHERE role = $1 LIMIT 1")
            .bind(Role::Admin.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .is_some())
    }

    pub async fn find_by_username(
        &self,
        username: &str,
    ) -> Result<Option<AccountRow>, sqlx::Error> {
        self.find("username", username).await
    }

    /// Applies `changes` and returns the account after them; `None` when the
    /// account no longer exists.
    #[tracing::instrument(skip_all, err)]
    pub async fn update_account(
        &self,
        id: &str,
        changes: AccountChanges,
    ) -> Result<Option<AccountRow>, StoreError> {
        let mut sets = Vec::new();
        let mut values: Vec<Option<String>> = Vec::new();
        let mut push = |column: &str, value: Option<String>| {
            values.push(value);
            sets.push(format!("{column} = ${}", values.len()));
        };
        if let Some(email) = changes.email {
            push("email", Some(email));
        }
        if let Some(username) = changes.username {
            push("username", Some(username));
        }
        if let Some(hash) = changes.password_hash {
            push("password_hash", Some(hash));
        }
        if let Some(bio) = changes.bio {
            push("bio", bio);
        }
        if let Some(image) = changes.image {
            push("image", image);
        }
        let n = values.len();
        let sql = format!(
            "UPDATE account SET {}updated_at = ${} WHERE id = ${}",
            sets.iter().map(|s| format!("{s}, ")).collect::<String>(),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        let mut tx = self.db.pool().begin().await?;
        let done = query
            .bind(now_micros())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(taken)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM account WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let updated = account(&row)?;
        let event = events::envelope(
            types::USER_UPDATED,
            PRODUCER,
            &ev::UserUpdated {
                user_id: updated.id.clone(),
                username: updated.username.clone(),
                email: updated.email.clone(),
                bio: updated.bio.clone(),
                image: updated.image.clone(),
            },
        );
        outbox::enqueue(&mut tx, &event).await?;
        outbox::commit(tx, &self.wake).await?;
        Ok(Some(updated))
    }

    /// Makes `follower` follow `followee`; following twice changes nothing and
    /// announces nothing.
    pub async fn follow(&self, follower: &str, followee: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query(
            "INSERT INTO follow (follower_id, followee_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (follower_id, followee_id) DO NOTHING",
        )
        .bind(follower)
        .bind(followee)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            let event = events::envelope(
                types::USER_FOLLOWED,
                PRODUCER,
                &ev::UserFollowed {
                    follower_id: follower.to_owned(),
                    followee_id: followee.to_owned(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(changed)
    }

    /// Ends a follow; whether one existed.
    pub async fn unfollow(&self, follower: &str, followee: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query("DELETE FROM follow WHERE follower_id = $1 AND followee_id = $2")
            .bind(follower)
            .bind(followee)
            .execute(&mut *tx)
            .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            let event = events::envelope(
                types::USER_UNFOLLOWED,
                PRODUCER,
                &ev::UserUnfollowed {
                    follower_id: follower.to_owned(),
                    followee_id: followee.to_owned(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(changed)
    }

    pub async fn is_following(&self, follower: &str, followee: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM follow WHERE follower_id = $1 AND followee_id = $2")
            .bind(follower)
            .bind(followee)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Accounts by id, in one query.
    pub async fn find_many(&self, ids: &[String]) -> Result<Vec<AccountRow>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM account WHERE id IN ({})",
            agora_kit::db::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        query
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(account)
            .collect()
    }

    /// Which of `ids` `follower` follows, in one query.
    pub async fn followed_among(
        &self,
        follower: &str,
        ids: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let found = agora_kit::db::strings_in(
            self.db.pool(),
            "SELECT followee_id FROM follow WHERE follower_id = $1 AND followee_id IN ({ids})",
            &[follower],
            ids,
        )
        .await?;
        Ok(found.into_iter().collect())
    }

    /// Account ids of `usernames`, in one query.
    pub async fn ids_of(&self, usernames: &[String]) -> Result<Vec<(String, String)>, sqlx::Error> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT username, id FROM account WHERE username IN ({})",
            agora_kit::db::placeholders(1, usernames.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for username in usernames {
            query = query.bind(username);
        }
        query
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Ids of the accounts `follower` follows, most recent first.
    pub async fn followees(&self, follower: &str, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query(
            "SELECT followee_id FROM follow WHERE follower_id = $1 \
             ORDER BY created_at DESC LIMIT $2",
        )
        .bind(follower)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
    }

    /// One page of accounts, oldest first, after the keyset `(created_at, id)`.
    pub async fn list_accounts(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<AccountRow>, sqlx::Error> {
        let (created_at, id) = after.unwrap_or((i64::MIN, String::new()));
        let sql = format!(
            "SELECT {COLUMNS} FROM account \
             WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
             ORDER BY created_at, id LIMIT $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(created_at)
            .bind(id)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(account)
            .collect()
    }

    /// Sets a role by username or by email; the account after it, if it exists.
    /// The change is announced (`user.role_changed`), so every replica applies it
    /// to the account's access tokens at once.
    pub async fn set_role(
        &self,
        column: RoleKey<'_>,
        role: Role,
    ) -> Result<Option<AccountRow>, sqlx::Error> {
        let (column, value) = match column {
            RoleKey::Username(u) => ("username", u),
            RoleKey::Email(e) => ("email", e),
        };
        let mut tx = self.db.pool().begin().await?;
        let sql = format!(
            "UPDATE account SET role = $1, updated_at = $2 WHERE {column} = $3 RETURNING id"
        );
        let id: Option<String> = sqlx::query(AssertSqlSafe(sql))
            .bind(role.as_str())
            .bind(now_micros())
            .bind(value)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let Some(id) = id else {
            return Ok(None);
        };
        let event = events::envelope(
            types::USER_ROLE_CHANGED,
            PRODUCER,
            &ev::UserRoleChanged {
                user_id: id,
                role: role.to_pb() as i32,
            },
        );
        outbox::enqueue(&mut tx, &event).await?;
        outbox::commit(tx, &self.wake).await?;
        self.find(column, value).await
    }

    /// Deletes an account and its follows; whether it existed.
    pub async fn delete_account(&self, id: &str) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let username: Option<String> = sqlx::query("SELECT username FROM account WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let Some(username) = username else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM follow WHERE follower_id = $1 OR followee_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM account WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let event = events::envelope(
            types::USER_DELETED,
            PRODUCER,
            &ev::UserDeleted {
                user_id: id.to_owned(),
                username,
            },
        );
        outbox::enqueue(&mut tx, &event).await?;
        outbox::commit(tx, &self.wake).await?;
        Ok(true)
    }
}

/// How `set_role` finds the account.
#[derive(Debug, Clone, Copy)]
pub enum RoleKey<'a> {
    Username(&'a str),
    Email(&'a str),
}
