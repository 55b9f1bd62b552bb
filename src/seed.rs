//! `agora seed`: fills empty user and post databases with generated accounts,
//! follows, articles, tags and favorites, fast enough to reach 100,000 articles in
//! seconds. The post service's projection of profiles and follows is filled too,
//! as the events of those accounts would have filled it.
//!
//! It writes straight into the services' databases (the same configuration
//! `serve` uses, migrating them first) with multi-row INSERTs of [`BATCH`] rows,
//! one transaction per database. Every account shares one argon2id hash of
//! [`PASSWORD`], computed once, so no per-user hashing happens. Rows follow the
//! stores' conventions: UUIDv7 text ids, BIGINT microsecond timestamps (spread
//! over a year, so ordering looks real), `published = 1`.
//!
//! Accounts are `seed<n>` / `seed<n>@agora.test`, articles `seed-article-<n>`
//! (the highest n is the newest). It is meant for empty databases: when seeded
//! rows are already there it refuses instead of half-inserting. The random
//! choices (authors, tags, follows) come from a fixed seed, so two runs with the
//! same counts produce the same shape.

use std::collections::HashSet;
use std::time::Instant;

use agora_kit::Config;
use agora_kit::ServiceName;
use agora_kit::db::now_micros;
use sqlx::{AnyConnection, AssertSqlSafe};

/// The password of every seeded account.
pub const PASSWORD: &str = "password123";

/// Rows per INSERT statement (10 columns × 500 stays far below both engines'
/// bind-parameter limits).
pub const BATCH: usize = 500;

/// Tags articles draw from, the first ones more often.
pub const TAGS: &[&str] = &[
    "rust",
    "grpc",
    "postgres",
    "sqlite",
    "tokio",
    "web",
    "api",
    "design",
    "testing",
    "security",
    "devops",
    "kubernetes",
    "performance",
    "databases",
    "tutorial",
    "news",
];

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// How much to create.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub users: usize,
    pub articles: usize,
    /// Accounts each user follows (distinct, never themselves).
    pub follows: usize,
    /// Articles each user favorites (distinct).
    pub favorites: usize,
}

/// What was created and how long it took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub users: u64,
    pub follows: u64,
    pub articles: u64,
    pub tags: u64,
    pub favorites: u64,
    pub users_secs: f64,
    pub articles_secs: f64,
    pub total_secs: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seeded {} users and {} follows in {:.2}s, {} articles, {} tags and {} favorites \
             in {:.2}s ({:.2}s in all; password for every account: {PASSWORD})",
            self.users,
            self.follows,
            self.users_secs,
            self.articles,
            self.tags,
            self.favorites,
            self.articles_secs,
            self.total_secs
        )
    }
}

/// Seeds the databases `config` points at.
pub async fn run(config: &Config, plan: Plan) -> anyhow::Result<Summary> {
    if plan.articles > 0 && plan.users == 0 {
        anyhow::bail!("articles need authors: pass --users 1 or more");
    }
    let started = Instant::now();
    let user_db = agora_user::open_db(config.database(ServiceName::User)).await?;
    let post_db = agora_post::open_db(config.database(ServiceName::Post)).await?;
    if plan.users > 0
        && exists(
            &user_db,
            "SELECT 1 FROM account WHERE username = $1",
            "seed0",
        )
        .await?
    {
        anyhow::bail!(
            "the user database already holds seeded accounts (seed0); seed a fresh database"
        );
    }
    if plan.articles > 0
        && exists(
            &post_db,
            "SELECT 1 FROM article WHERE slug = $1",
            "seed-article-0",
        )
        .await?
    {
        anyhow::bail!("the post database already holds seeded articles; seed a fresh database");
    }

    let password = agora_user::domain::Password::parse(PASSWORD)
        .map_err(|v| anyhow::anyhow!("seed password rejected: {v:?}"))?;
    let hash = agora_user::password::Hasher::new(1).hash(&password).await?;

    let mut rng = SplitMix64(0x5eed_a60a);
    let now = now_micros();
    // Accounts appear over the year before the first article; articles over the
    // last year, newest last. Both strictly increasing.
    let year = 365 * MICROS_PER_DAY;
    let user_ids: Vec<String> = (0..plan.users)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let user_time = |n: usize| now - 2 * year + spread(n, plan.users, year);
    let mut summary = Summary::default();

    let phase = Instant::now();
    let mut tx = user_db.pool().begin().await?;
    summary.users = insert_rows(
        &mut tx,
        "account",
        &[
            "id",
            "email",
            "username",
            "password_hash",
            "role",
            "created_at",
            "updated_at",
        ],
        "",
        plan.users,
        |n| {
            let at = user_time(n);
            vec![
                Value::Text(user_ids[n].clone()),
                Value::Text(format!("seed{n}@agora.test")),
                Value::Text(format!("seed{n}")),
                Value::Text(hash.clone()),
                Value::Text("user".into()),
                Value::Int(at),
                Value::Int(at),
            ]
        },
    )
    .await?;
    let per_user = plan.follows.min(plan.users.saturating_sub(1));
    let follows = pairs(&mut rng, plan.users, per_user, plan.users, true);
    summary.follows = insert_rows(
        &mut tx,
        "follow",
        &["follower_id", "followee_id", "created_at"],
        " ON CONFLICT (follower_id, followee_id) DO NOTHING",
        follows.len(),
        |i| {
            let (follower, followee) = follows[i];
            vec![
                Value::Text(user_ids[follower].clone()),
                Value::Text(user_ids[followee].clone()),
                Value::Int(user_time(follower.max(followee)) + i as i64),
            ]
        },
    )
    .await?;
    tx.commit().await?;
    summary.users_secs = phase.elapsed().as_secs_f64();

    let phase = Instant::now();
    let article_ids: Vec<String> = (0..plan.articles)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let mut tags: Vec<(usize, &'static str)> = Vec::with_capacity(plan.articles * 2);
    let mut tx = post_db.pool().begin().await?;
    summary.articles = insert_rows(
        &mut tx,
        "article",
        &[
            "id",
            "slug",
            "author_id",
            "title",
            "description",
            "body",
            "published",
            "favorites_count",
            "created_at",
            "updated_at",
        ],
        "",
        plan.articles,
        |n| {
            let author = rng.below(plan.users);
            let wanted = 1 + rng.below(3);
            let mut mine: Vec<&'static str> = Vec::with_capacity(wanted);
            while mine.len() < wanted {
                // min of two draws: lower indexes (the popular tags) come up more
                let tag = TAGS[rng.below(TAGS.len()).min(rng.below(TAGS.len()))];
                if !mine.contains(&tag) {
                    mine.push(tag);
                }
            }
            tags.extend(mine.iter().map(|t| (n, *t)));
            let at = now - year + spread(n, plan.articles, year);
            vec![
                Value::Text(article_ids[n].clone()),
                Value::Text(format!("seed-article-{n}")),
                Value::Text(user_ids[author].clone()),
                Value::Text(format!("Seed article {n}")),
                Value::Text(format!(
                    "Generated article number {n} about {}",
                    mine.join(", ")
                )),
                Value::Text(body(n)),
                Value::Int(1),
                Value::Int(0),
                Value::Int(at),
                Value::Int(at),
            ]
        },
    )
    .await?;
    summary.tags = insert_rows(
        &mut tx,
        "article_tag",
        &["article_id", "tag"],
        "",
        tags.len(),
        |i| {
            let (n, tag) = tags[i];
            vec![
                Value::Text(article_ids[n].clone()),
                Value::Text(tag.to_owned()),
            ]
        },
    )
    .await?;
    let per_user = plan.favorites.min(plan.articles);
    let favorites = pairs(&mut rng, plan.users, per_user, plan.articles, false);
    summary.favorites = insert_rows(
        &mut tx,
        "favorite",
        &["user_id", "article_id", "created_at"],
        "",
        favorites.len(),
        |i| {
            let (user, article) = favorites[i];
            vec![
                Value::Text(user_ids[user].clone()),
                Value::Text(article_ids[article].clone()),
                Value::Int(now - i as i64),
            ]
        },
    )
    .await?;
    sqlx::query(
        "UPDATE article SET favorites_count = \
         (SELECT COUNT(*) FROM favorite f WHERE f.article_id = article.id) \
         WHERE id IN (SELECT article_id FROM favorite)",
    )
    .execute(&mut *tx)
    .await?;
    // The profile projection, as user.registered and user.followed would have
    // left it (version '' lets any real event win).
    insert_rows(
        &mut tx,
        "author",
        &["id", "username", "deleted", "version"],
        " ON CONFLICT (id) DO NOTHING",
        plan.users,
        |n| {
            vec![
                Value::Text(user_ids[n].clone()),
                Value::Text(format!("seed{n}")),
                Value::Int(0),
                Value::Text(String::new()),
            ]
        },
    )
    .await?;
    insert_rows(
        &mut tx,
        "follow",
        &["follower_id", "followee_id", "following", "version"],
        " ON CONFLICT (follower_id, followee_id) DO NOTHING",
        follows.len(),
        |i| {
            let (follower, followee) = follows[i];
            vec![
                Value::Text(user_ids[follower].clone()),
                Value::Text(user_ids[followee].clone()),
                Value::Int(1),
                Value::Text(String::new()),
            ]
        },
    )
    .await?;
    // The kept counts behind `articlesCount` (the post store keeps them in step
    // with its own writes; bulk rows bypass it).
    for sql in [
        "DELETE FROM article_count",
        "INSERT INTO article_count (scope, n) SELECT '', COUNT(*) FROM article WHERE published = 1",
        "INSERT INTO article_count (scope, n) SELECT 'tag:' || t.tag, COUNT(*) \
         FROM article_tag t JOIN article a ON a.id = t.article_id \
         WHERE a.published = 1 GROUP BY t.tag",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    summary.articles_secs = phase.elapsed().as_secs_f64();
    summary.total_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// For each of `count` owners, `per` distinct targets below `targets` picked at
/// random (never the owner's own number when `not_self`): follows, favorites.
fn pairs(
    rng: &mut SplitMix64,
    count: usize,
    per: usize,
    targets: usize,
    not_self: bool,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::with_capacity(count * per);
    for owner in 0..count {
        let mut chosen = HashSet::with_capacity(per);
        while chosen.len() < per {
            let target = rng.below(targets);
            if !(not_self && target == owner) && chosen.insert(target) {
                pairs.push((owner, target));
            }
        }
    }
    pairs
}

/// `n` of `count` spread evenly (strictly increasing) over `span` microseconds.
fn spread(n: usize, count: usize, span: i64) -> i64 {
    let step = (span / count.max(1) as i64).max(1);
    n as i64 * step
}

fn body(n: usize) -> String {
    format!(
        "# Seed article {n}\n\nThis article was generated by `agora seed` for load tests. \
         It has a few paragraphs of text so that responses are about the size of a real \
         post.\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
         tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis \
         nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.\n\n\
         Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu \
         fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in \
         culpa qui officia deserunt mollit anim id est laborum.\n"
    )
}

async fn exists(db: &agora_kit::db::Db, sql: &'static str, value: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query(sql)
        .bind(value)
        .fetch_optional(db.pool())
        .await?
        .is_some())
}

/// One bound value.
enum Value {
    Text(String),
    Int(i64),
}

/// Inserts `count` rows, `row(i)` each, [`BATCH`] per statement; `tail` follows
/// the VALUES list (an ON CONFLICT clause). Returns the rows inserted.
async fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    tail: &str,
    count: usize,
    mut row: impl FnMut(usize) -> Vec<Value>,
) -> sqlx::Result<u64> {
    let width = columns.len();
    let mut inserted = 0;
    let mut start = 0;
    while start < count {
        let end = (start + BATCH).min(count);
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        for r in 0..end - start {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", r * width + c + 1));
            }
            sql.push(')');
        }
        sql.push_str(tail);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for i in start..end {
            for value in row(i) {
                query = match value {
                    Value::Text(text) => query.bind(text),
                    Value::Int(int) => query.bind(int),
                };
            }
        }
        inserted += query.execute(&mut *conn).await?.rows_affected();
        start = end;
    }
    Ok(inserted)
}

/// A small deterministic generator (SplitMix64): reproducible data without a
/// dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_strictly_increasing() {
        let span = 365 * MICROS_PER_DAY;
        let times: Vec<i64> = (0..100_000).map(|n| spread(n, 100_000, span)).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(*times.last().unwrap() < span);
    }

    #[test]
    fn generator_is_deterministic_and_in_range() {
        let mut a = SplitMix64(1);
        let mut b = SplitMix64(1);
        for _ in 0..1000 {
            let x = a.below(7);
            assert_eq!(x, b.below(7));
            assert!(x < 7);
        }
    }
}
