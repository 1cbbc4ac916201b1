//! The user commands: keys, registration, signed posts, follows, timelines,
//! edits and deletes.
//!
//! User keys live in key files (the format of [`Keypair::save`], mode 0600),
//! by default `$HEARSAY_HOME/users/NAME.key`, where `HEARSAY_HOME` defaults
//! to `$XDG_CONFIG_HOME/hearsay`, then `$HOME/.config/hearsay`. A command
//! that acts for a user signs when it finds the user's key (`--key-file`, or
//! the default file); nodes require it once the name is registered.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hearsay_crdt::{Keypair, PostId, UserName};
use hearsay_node::client::Client;

use crate::client::{NodeUrl, print};

/// The directory of hearsay's client files.
pub fn home() -> anyhow::Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(h) = var("HEARSAY_HOME") {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("hearsay"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("hearsay")),
        None => bail!(
            "cannot tell where user keys live: set HEARSAY_HOME (or HOME), or pass --key-file"
        ),
    }
}

/// `$HEARSAY_HOME/users/NAME.key`.
pub fn default_key_path(name: &UserName) -> anyhow::Result<PathBuf> {
    Ok(home()?.join("users").join(format!("{name}.key")))
}

pub fn parse_name(s: &str) -> anyhow::Result<UserName> {
    UserName::new(s).with_context(|| format!("user name {s:?}"))
}

fn parse_post_id(s: &str) -> anyhow::Result<PostId> {
    s.parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a valid post id (32 lowercase hex digits)"))
}

/// `--key-file`: which key signs.
#[derive(clap::Args, Debug)]
pub struct KeyFile {
    /// The user's key file [default: $HEARSAY_HOME/users/NAME.key]
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeyFile {
    /// The key given with `--key-file` (which must exist), else `name`'s
    /// default key file when it exists, else none.
    pub fn find(&self, name: &UserName) -> anyhow::Result<Option<Keypair>> {
        if let Some(path) = &self.key_file {
            return Ok(Some(Keypair::load(path)?));
        }
        let path = default_key_path(name)?;
        if path.exists() {
            return Ok(Some(Keypair::load(&path)?));
        }
        Ok(None)
    }

    /// Like [`KeyFile::find`], but a key is required.
    pub fn require(&self, name: &UserName) -> anyhow::Result<Keypair> {
        match self.find(name)? {
            Some(key) => Ok(key),
            None => bail!(
                "no key for user {name} at {} (create one with `hearsay user new {name}`, or pass --key-file)",
                default_key_path(name)?.display()
            ),
        }
    }
}

/// `hearsay user new`: creates (or reuses) the key file, and registers the
/// name on the node when one is given.
pub async fn new_user(
    name: &str,
    key_file: Option<PathBuf>,
    node: Option<String>,
    display_name: Option<String>,
) -> anyhow::Result<()> {
    let name = parse_name(name)?;
    let path = match key_file {
        Some(p) => p,
        None => default_key_path(&name)?,
    };
    let key = if path.exists() {
        eprintln!("using the existing key {}", path.display());
        Keypair::load(&path)?
    } else {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let key = Keypair::generate();
        key.save(&path)?;
        eprintln!("created {}", path.display());
        key
    };
    let registered = match node {
        Some(url) => {
            let acked = Client::new(&url)
                .register_user(&name, &key, display_name.as_deref())
                .await
                .with_context(|| format!("registering {name} at {url}"))?;
            Some(serde_json::json!({"profile": acked.value, "token": acked.token}))
        }
        None => None,
    };
    print(&serde_json::json!({
        "user": name,
        "public_key": key.id(),
        "key_file": path,
        "registered": registered,
    }));
    Ok(())
}

/// Creates `dir` (and its parents), readable by its owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `hearsay post --as NAME`: a post signed with NAME's key.
pub async fn signed_post(
    node: &NodeUrl,
    name: &str,
    key: &KeyFile,
    text: &str,
    reply_to: Option<&str>,
) -> anyhow::Result<()> {
    let name = parse_name(name)?;
    let key = key.require(&name)?;
    let reply_to = reply_to.map(parse_post_id).transpose()?;
    let acked = node
        .client()
        .create_signed_post(&name, text, reply_to, &key)
        .await?;
    print(&acked.value);
    Ok(())
}

/// `hearsay follow` and `hearsay unfollow`.
pub async fn follow(
    node: &NodeUrl,
    name: &str,
    other: &str,
    key: &KeyFile,
    follow: bool,
) -> anyhow::Result<()> {
    let (user, whom) = (parse_name(name)?, parse_name(other)?);
    let key = key.find(&user)?;
    let client = node.client();
    let acked = if follow {
        client.follow(&user, &whom, key.as_ref()).await?
    } else {
        client.unfollow(&user, &whom, key.as_ref()).await?
    };
    print(&acked.value);
    Ok(())
}

/// The key that signs a change of post `id`: none for an unsigned post;
/// for a signed one, `--key-file`, `--as NAME`'s key, or the author's.
async fn key_for_post(
    client: &Client,
    id: PostId,
    as_user: Option<&str>,
    key: &KeyFile,
) -> anyhow::Result<(hearsay_crdt::Post, Option<Keypair>)> {
    let Some(found) = client.post(&id.to_string()).await? else {
        bail!("no post {id} at {}", client.base_url());
    };
    let post = found.post;
    if post.author_key.is_none() {
        return Ok((post, None));
    }
    let name = match as_user {
        Some(n) => parse_name(n)?,
        None => post.author.clone(),
    };
    let key = key.require(&name).with_context(|| {
        format!(
            "post {id} is signed by {}: a change must be signed by the same key",
            post.author
        )
    })?;
    Ok((post, Some(key)))
}

/// What `hearsay edit` changes.
#[derive(Debug)]
pub enum EditSpec {
    /// Replace the whole body (sent as the smallest splice that does it).
    Body(String),
    Splice {
        pos: usize,
        delete: usize,
        insert: String,
    },
}

/// The splice turning `old` into `new`: keeps their common prefix and
/// suffix (in characters), so a concurrent edit elsewhere in the body
/// merges instead of being overwritten.
pub fn splice(old: &str, new: &str) -> (usize, usize, String) {
    let (o, n): (Vec<char>, Vec<char>) = (old.chars().collect(), new.chars().collect());
    let prefix = o.iter().zip(&n).take_while(|(a, b)| a == b).count();
    let suffix = o[prefix..]
        .iter()
        .rev()
        .zip(n[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let insert: String = n[prefix..n.len() - suffix].iter().collect();
    (prefix, o.len() - prefix - suffix, insert)
}

/// `hearsay edit`.
pub async fn edit(
    node: &NodeUrl,
    id: &str,
    spec: EditSpec,
    as_user: Option<&str>,
    key: &KeyFile,
) -> anyhow::Result<()> {
    let id = parse_post_id(id)?;
    let client = node.client();
    let (post, key) = key_for_post(&client, id, as_user, key).await?;
    let (pos, delete, insert) = match spec {
        EditSpec::Splice {
            pos,
            delete,
            insert,
        } => (pos, delete, insert),
        EditSpec::Body(new) => {
            if new == post.body {
                bail!("post {id} already has that body");
            }
            splice(&post.body, &new)
        }
    };
    let acked = client
        .edit_acked(id, pos, delete, &insert, key.as_ref())
        .await?;
    print(&acked.value);
    Ok(())
}

/// `hearsay delete`.
pub async fn delete(
    node: &NodeUrl,
    id: &str,
    as_user: Option<&str>,
    key: &KeyFile,
) -> anyhow::Result<()> {
    let id = parse_post_id(id)?;
    let client = node.client();
    let (_, key) = key_for_post(&client, id, as_user, key).await?;
    let acked = client.delete_acked(id, key.as_ref()).await?;
    print(&acked.value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(old: &str, (pos, delete, insert): (usize, usize, String)) -> String {
        let chars: Vec<char> = old.chars().collect();
        let mut out: String = chars[..pos].iter().collect();
        out.push_str(&insert);
        out.extend(&chars[pos + delete..]);
        out
    }

    #[test]
    fn a_body_replacement_is_the_smallest_splice() {
        for (old, new) in [
            ("hello world", "hello brave world"),
            ("héllo wörld", "héllo"),
            ("abc", "xyz"),
            ("", "new"),
            ("aaa", "aa"),
            ("ab", "aXb"),
            ("🦀 crab", "🦀🦀 crab"),
        ] {
            let s = splice(old, new);
            assert_eq!(apply(old, s.clone()), new, "{old:?} -> {new:?}: {s:?}");
        }
        assert_eq!(
            splice("hello world", "hello brave world"),
            (6, 0, "brave ".into())
        );
        assert_eq!(splice("abc", "xyz"), (0, 3, "xyz".into()));
    }
}
