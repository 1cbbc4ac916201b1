//! The typed client of the HTTP API: the one place that unwraps the JSON
//! envelope `{"status": "OK"|"ERROR", "body": ..., "error": "..."}`.
//!
//! The CLI, the cluster tests, the benchmark and the demo all talk to nodes
//! through [`Client`]. Each route has a typed method; an answer that is not
//! `200 {"status": "OK"}` becomes a [`ClientError`] that keeps the HTTP status
//! and the server's message, so callers (and tests) can tell a refusal (4xx,
//! 503), an overloaded node ([`ClientError::SlowDown`], with how long to wait)
//! and a transport failure or a malformed answer apart. For requests the
//! typed methods cannot express (bad input, on purpose), [`Client::get_raw`]
//! and [`Client::send`] return the status and the JSON as they came.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hearsay_node::client::ClientError> {
//! use hearsay_node::client::Client;
//! let node = Client::new("http://127.0.0.1:8080");
//! let post = node.create_post(Some("ann"), "hello", None).await?;
//! let read = node.post(&post.id.to_string()).await?.expect("just written");
//! assert_eq!(read.post.body, "hello");
//! println!("revision {}", node.stats().await?.revision);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hearsay_crdt::signing::{self, Action, PostSignature};
use hearsay_crdt::{Keypair, NewPost, Post, PostId, Profile, UserName};
pub use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::mesh::{Mesh, MeshPeer, MeshSelf};

/// Timeout of one request made by [`Client::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait assumed when a `SLOWDOWN` answer names none.
const DEFAULT_RETRY_AFTER_MS: u64 = 1000;

/// Why a request did not produce the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused or reset, timeout, body cut off.
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an error (the envelope's message, or the
    /// status's reason when the answer had none).
    #[error("{url}: HTTP {status}: {message}")]
    Refused {
        url: String,
        status: StatusCode,
        message: String,
    },
    /// The node is overloaded (503 `SLOWDOWN`): nothing of the request was
    /// stored; retry after `retry_after_ms`.
    #[error("{url}: node overloaded, retry in {retry_after_ms} ms")]
    SlowDown {
        url: String,
        retry_after_ms: u64,
        message: String,
    },
    /// The node answered something that is not the envelope expected.
    #[error("{url}: HTTP {status}: not a hearsay answer: {why}")]
    Malformed {
        url: String,
        status: StatusCode,
        why: String,
    },
}

impl ClientError {
    /// The HTTP status, when the node answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Transport { .. } => None,
            ClientError::Refused { status, .. } | ClientError::Malformed { status, .. } => {
                Some(*status)
            }
            ClientError::SlowDown { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The server's error message, for a refusal.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Refused { message, .. } | ClientError::SlowDown { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }

    /// How long the node asked to wait before retrying, when it refused
    /// because it is overloaded.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ClientError::SlowDown { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

/// An answer as it came: the status and the JSON body (a JSON string holding
/// the text when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub url: String,
    pub status: StatusCode,
    pub json: Value,
    /// The `X-Hearsay-Token` header: on a write, the token covering it; on a
    /// read, the node's durable head when it answered.
    pub token: Option<String>,
}

/// A durable write's answer: what it produced and the token covering it.
/// Read with `?after=` that token on any node to see the write.
#[derive(Clone, Debug)]
pub struct Acked<T> {
    pub value: T,
    pub token: String,
}

impl Answer {
    /// The `body` of a `200 {"status": "OK"}` answer, or the error it is.
    pub fn ok_body(self) -> Result<Value, ClientError> {
        if self.status == StatusCode::OK && self.json["status"] == "OK" {
            Ok(self.json["body"].clone())
        } else {
            Err(self.into_error())
        }
    }

    /// The error an answer other than `200 OK` is: [`ClientError::SlowDown`]
    /// for a 503 `SLOWDOWN`, a refusal when the node answered an error
    /// status or an error envelope, else malformed.
    pub fn into_error(self) -> ClientError {
        if self.status == StatusCode::SERVICE_UNAVAILABLE && self.json["status"] == "SLOWDOWN" {
            let retry_after_ms = self.json["retry_after_ms"]
                .as_u64()
                .unwrap_or(DEFAULT_RETRY_AFTER_MS);
            let message = self.json["error"]
                .as_str()
                .unwrap_or("node overloaded")
                .to_owned();
            return ClientError::SlowDown {
                url: self.url,
                retry_after_ms,
                message,
            };
        }
        if self.json["status"] == "ERROR" || !self.status.is_success() {
            let message = match self.json["error"].as_str() {
                Some(m) => m.to_owned(),
                None => self.status.canonical_reason().unwrap_or("error").to_owned(),
            };
            return ClientError::Refused {
                url: self.url,
                status: self.status,
                message,
            };
        }
        ClientError::Malformed {
            url: self.url,
            status: self.status,
            why: format!("no OK envelope in {}", self.json),
        }
    }

    /// The message of an error envelope (`{"status": "ERROR", "error": "..."}`
    /// with a non-blank message); `None` for any other answer.
    pub fn error_message(&self) -> Option<&str> {
        if self.json["status"] != "ERROR" {
            return None;
        }
        self.json["error"].as_str().filter(|m| !m.trim().is_empty())
    }
}

/// `GET /api/v0/stats`: the fields clients rely on, and the rest as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    pub peer_id: String,
    pub region: String,
    /// Sum of the version vector.
    pub revision: u64,
    /// Origin (hex node id) to highest contiguous seq.
    pub version_vector: BTreeMap<String, u64>,
    /// Connected peers.
    pub peers: u64,
    /// Refused peer messages by kind.
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
    /// Every other field of the answer.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// `GET /api/v0/p/{id}`: the post and the id of the one before it in the
/// public timeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadPost {
    pub post: Post,
    pub prev: Option<PostId>,
}

/// A client of one node's HTTP API. Cheap to clone (the connection pool is
/// shared).
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the node at `base_url` (`http://host:port`), with
    /// [`DEFAULT_TIMEOUT`] per request.
    pub fn new(base_url: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .build()
            .expect("HTTP client");
        Client::with_http(base_url, http)
    }

    /// A client using `http` (its pool, timeouts) for its requests.
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Client {
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The base URL followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The underlying HTTP client, to build requests for [`Client::send`].
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    // ---- raw ----------------------------------------------------------------

    /// Sends `request` and returns the answer whatever its status; errors
    /// only when no complete answer arrived.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, ClientError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })?;
        let url = request.url().to_string();
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = client.execute(request).await.map_err(transport)?;
        let status = response.status();
        let token = response
            .headers()
            .get("x-hearsay-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(transport)?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            url,
            status,
            json,
            token,
        })
    }

    /// `GET path`, the answer as it came.
    pub async fn get_raw(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `GET path`, the body of the OK envelope.
    pub async fn get_body(&self, path: &str) -> Result<Value, ClientError> {
        self.get_raw(path).await?.ok_body()
    }

    async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        Ok(self.acked(request).await?.value)
    }

    /// Like `typed`, keeping the answer's token (a write's must have one).
    async fn acked<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Acked<T>, ClientError> {
        let answer = self.send(request).await?;
        let (url, status, token) = (answer.url.clone(), answer.status, answer.token.clone());
        let malformed = |why: String| ClientError::Malformed {
            url: url.clone(),
            status,
            why,
        };
        let value =
            serde_json::from_value(answer.ok_body()?).map_err(|e| malformed(e.to_string()))?;
        Ok(Acked {
            value,
            token: token.unwrap_or_default(),
        })
    }

    /// `GET path` answered once the node holds everything `token` names
    /// (`?after=`), waiting at most `wait_ms`; a 409 refusal when it does not
    /// catch up in time.
    pub async fn get_after(
        &self,
        path: &str,
        token: &str,
        wait_ms: u64,
    ) -> Result<Value, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.get_body(&format!("{path}{sep}after={token}&wait_ms={wait_ms}"))
            .await
    }

    // ---- routes -------------------------------------------------------------

    /// `GET /api/v0/health`: Ok while the node takes writes; a 503 refusal
    /// (with the reason) when its store failed or it is shutting down.
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.get_body("/api/v0/health").await
    }

    /// `GET /api/v0/stats`.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        self.typed(self.http.get(self.url("/api/v0/stats"))).await
    }

    /// `POST /api/v0/p`: creates a post (anonymous without an author).
    pub async fn create_post(
        &self,
        author: Option<&str>,
        body: &str,
        reply_to: Option<&str>,
    ) -> Result<Post, ClientError> {
        Ok(self.create_post_acked(author, body, reply_to).await?.value)
    }

    /// [`Client::create_post`], with the token covering the write.
    pub async fn create_post_acked(
        &self,
        author: Option<&str>,
        body: &str,
        reply_to: Option<&str>,
    ) -> Result<Acked<Post>, ClientError> {
        let request = self
            .http
            .post(self.url("/api/v0/p"))
            .json(&json!({"author": author, "body": body, "reply_to": reply_to}));
        self.acked(request).await
    }

    /// `GET /api/v0/p/{id}`: the post, `None` when the node does not hold it
    /// (404).
    pub async fn post(&self, id: &str) -> Result<Option<ReadPost>, ClientError> {
        match self
            .typed(self.http.get(self.url(&format!("/api/v0/p/{id}"))))
            .await
        {
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            other => other.map(Some),
        }
    }

    /// `GET /api/v0/p?limit=N[&before=ID]`: the newest posts, or those
    /// older than `before`.
    pub async fn posts(
        &self,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Vec<Post>, ClientError> {
        let path = match before {
            None => format!("/api/v0/p?limit={limit}"),
            Some(b) => format!("/api/v0/p?limit={limit}&before={b}"),
        };
        self.typed(self.http.get(self.url(&path))).await
    }

    /// `PATCH /api/v0/p/{id}`: at character `pos`, removes `delete`
    /// characters and inserts `insert`; the edited post.
    pub async fn edit(
        &self,
        id: &str,
        pos: usize,
        delete: usize,
        insert: &str,
    ) -> Result<Post, ClientError> {
        let request = self
            .http
            .patch(self.url(&format!("/api/v0/p/{id}")))
            .json(&json!({"pos": pos, "delete": delete, "insert": insert}));
        self.typed(request).await
    }

    /// `DELETE /api/v0/p/{id}`: the post, now a tombstone.
    pub async fn delete(&self, id: &str) -> Result<Post, ClientError> {
        self.typed(self.http.delete(self.url(&format!("/api/v0/p/{id}"))))
            .await
    }

    // ---- users ----------------------------------------------------------------

    /// `POST /api/v0/users`: registers `name` with `key`, signing the
    /// registration with it; the profile and the token covering the write.
    pub async fn register_user(
        &self,
        name: &UserName,
        key: &Keypair,
        display_name: Option<&str>,
    ) -> Result<Acked<Profile>, ClientError> {
        let signature = signing::sign_registration(key, name, display_name);
        let request = self.http.post(self.url("/api/v0/users")).json(&json!({
            "name": name,
            "public_key": key.id(),
            "display_name": display_name,
            "signature": signing::signature_to_hex(&signature),
        }));
        self.acked(request).await
    }

    /// `GET /api/v0/users/{name}`: display name, public key, follows.
    pub async fn user(&self, name: &UserName) -> Result<Profile, ClientError> {
        self.typed(self.http.get(self.url(&format!("/api/v0/users/{name}"))))
            .await
    }

    /// `GET /api/v0/users/{name}/timeline`: the user's posts, newest first.
    pub async fn timeline(
        &self,
        name: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>, ClientError> {
        self.typed(self.http.get(self.url(&page_path(
            &format!("/api/v0/users/{name}/timeline"),
            limit,
            before,
        ))))
        .await
    }

    /// `GET /api/v0/users/{name}/home`: the posts of the users `name`
    /// follows, newest first.
    pub async fn home(
        &self,
        name: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>, ClientError> {
        self.typed(self.http.get(self.url(&page_path(
            &format!("/api/v0/users/{name}/home"),
            limit,
            before,
        ))))
        .await
    }

    /// `POST /api/v0/users/{user}/follows/{whom}`, signed with `key` when
    /// given (required once `user` has a registered key).
    pub async fn follow(
        &self,
        user: &UserName,
        whom: &UserName,
        key: Option<&Keypair>,
    ) -> Result<Acked<Profile>, ClientError> {
        self.follow_or_unfollow(true, user, whom, key).await
    }

    /// `DELETE /api/v0/users/{user}/follows/{whom}`, signed like
    /// [`Client::follow`].
    pub async fn unfollow(
        &self,
        user: &UserName,
        whom: &UserName,
        key: Option<&Keypair>,
    ) -> Result<Acked<Profile>, ClientError> {
        self.follow_or_unfollow(false, user, whom, key).await
    }

    async fn follow_or_unfollow(
        &self,
        follow: bool,
        user: &UserName,
        whom: &UserName,
        key: Option<&Keypair>,
    ) -> Result<Acked<Profile>, ClientError> {
        let url = self.url(&format!("/api/v0/users/{user}/follows/{whom}"));
        let request = if follow {
            self.http.post(url)
        } else {
            self.http.delete(url)
        };
        let action = Action::follow(follow, user, whom);
        self.acked(signed_body(request, &action, key)).await
    }

    /// `POST /api/v0/p`: a post by `author`, signed with `key` under an id
    /// made here (the signature covers the id).
    pub async fn create_signed_post(
        &self,
        author: &UserName,
        body: &str,
        reply_to: Option<PostId>,
        key: &Keypair,
    ) -> Result<Acked<Post>, ClientError> {
        let new = NewPost {
            author: author.clone(),
            body: body.to_owned(),
            reply_to,
        };
        let signature = PostSignature::sign(key, PostId::generate(now_ms()), &new);
        self.create_post_signed_as(&new, &signature).await
    }

    /// `POST /api/v0/p` with a signature made elsewhere (or made wrong, on
    /// purpose).
    pub async fn create_post_signed_as(
        &self,
        new: &NewPost,
        signature: &PostSignature,
    ) -> Result<Acked<Post>, ClientError> {
        let request = self.http.post(self.url("/api/v0/p")).json(&json!({
            "author": new.author,
            "body": new.body,
            "reply_to": new.reply_to,
            "id": signature.id,
            "author_key": signature.author_key,
            "signature": signing::signature_to_hex(&signature.signature),
        }));
        self.acked(request).await
    }

    /// `PATCH /api/v0/p/{id}`, signed with `key` when given (required for a
    /// signed post: the author's key); the edited post and the token.
    pub async fn edit_acked(
        &self,
        id: PostId,
        pos: usize,
        delete: usize,
        insert: &str,
        key: Option<&Keypair>,
    ) -> Result<Acked<Post>, ClientError> {
        let mut body = json!({"pos": pos, "delete": delete, "insert": insert});
        if let Some(key) = key {
            let at_ms = now_ms();
            let action = Action::Edit {
                post: id,
                pos: pos as u64,
                delete: delete as u64,
                insert,
            };
            body["at_ms"] = json!(at_ms);
            body["signature"] = json!(signing::signature_to_hex(&action.sign(key, at_ms)));
        }
        let request = self
            .http
            .patch(self.url(&format!("/api/v0/p/{id}")))
            .json(&body);
        self.acked(request).await
    }

    /// `DELETE /api/v0/p/{id}`, signed with `key` when given (required for
    /// a signed post); the tombstone and the token.
    pub async fn delete_acked(
        &self,
        id: PostId,
        key: Option<&Keypair>,
    ) -> Result<Acked<Post>, ClientError> {
        let request = self.http.delete(self.url(&format!("/api/v0/p/{id}")));
        let action = Action::Delete { post: id };
        self.acked(signed_body(request, &action, key)).await
    }

    /// `GET /api/v0/mesh`: the node and the peers it knows.
    pub async fn mesh(&self) -> Result<Mesh, ClientError> {
        self.typed(self.http.get(self.url("/api/v0/mesh"))).await
    }

    /// `GET /api/v0/nodes`: every node known by its status.
    pub async fn nodes(&self) -> Result<crate::mesh::Nodes, ClientError> {
        self.typed(self.http.get(self.url("/api/v0/nodes"))).await
    }

    /// `GET /api/v0/sync`: what this node and each other lack of each other.
    pub async fn sync_view(&self) -> Result<crate::mesh::SyncView, ClientError> {
        self.typed(self.http.get(self.url("/api/v0/sync"))).await
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let answer = self.get_raw("/metrics").await?;
        match answer.json {
            Value::String(text) if answer.status == StatusCode::OK => Ok(text),
            _ => Err(answer.into_error()),
        }
    }
}

// ---- event stream -------------------------------------------------------------

/// Longest line accepted from an event stream (a change event carries at
/// most one post, far below this).
const MAX_SSE_LINE: usize = 1 << 20;
/// A stream with no byte (not even a keep-alive comment) for this long is
/// taken as dead.
pub const EVENTS_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One message of `GET /api/v0/events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    /// The token covering this event and everything before it on the stream.
    pub id: Option<String>,
    /// `post`, `edit`, `delete`, `follow`, `unfollow`, `profile`, or a
    /// control event: `ready`, `ahead`, `unavailable`, `lagged`.
    pub event: String,
    pub data: String,
}

impl StreamEvent {
    /// The data as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// Whether this is a change (not a control event).
    pub fn is_change(&self) -> bool {
        matches!(
            self.event.as_str(),
            "post" | "edit" | "delete" | "follow" | "unfollow" | "profile"
        )
    }
}

/// A server-sent event stream being read: [`EventStream::next`] returns each
/// message as it arrives, and [`EventStream::last_id`] the resume token (id-only
/// messages move it without being returned, as in browsers).
#[derive(Debug)]
pub struct EventStream {
    url: String,
    response: reqwest::Response,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    read: usize,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    last_id: Option<String>,
    /// Keep-alive comments seen.
    pub comments: u64,
}

impl EventStream {
    /// The id of the last message received: resume here.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            // Lines are taken from `read` on; the buffer is compacted once
            // per chunk, not once per line.
            while let Some(len) = self.buf[self.read..].iter().position(|b| *b == b'\n') {
                let mut line = &self.buf[self.read..self.read + len];
                self.read += len + 1;
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let line = String::from_utf8_lossy(line).into_owned();
                if let Some(event) = self.line(&line) {
                    return Ok(Some(event));
                }
            }
            self.buf.drain(..self.read);
            self.read = 0;
            if self.buf.len() > MAX_SSE_LINE {
                return Err(ClientError::Malformed {
                    url: self.url.clone(),
                    status: StatusCode::OK,
                    why: format!("event stream line longer than {MAX_SSE_LINE} bytes"),
                });
            }
            let url = self.url.clone();
            match self
                .response
                .chunk()
                .await
                .map_err(|source| ClientError::Transport { url, source })?
            {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }

    /// Takes one line; a blank line dispatches the message.
    fn line(&mut self, line: &str) -> Option<StreamEvent> {
        if line.is_empty() {
            if let Some(id) = self.id.take() {
                self.last_id = Some(id.clone());
                let event = self.event.take().unwrap_or_else(|| "message".into());
                return self.data.take().map(|data| StreamEvent {
                    id: Some(id),
                    event,
                    data,
                });
            }
            let event = self.event.take().unwrap_or_else(|| "message".into());
            return self.data.take().map(|data| StreamEvent {
                id: None,
                event,
                data,
            });
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => self.id = Some(value),
            "event" => self.event = Some(value),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value),
            },
            _ => {}
        }
        None
    }
}

impl Client {
    /// `GET /api/v0/events`: from `from` (a token; `None`: live only;
    /// `Some("start")`: everything), with `filters` such as
    /// `[("author", "ann"), ("kind", "post,edit")]`. A refusal (400 for a
    /// malformed token) is an error; the stream has no overall timeout, only
    /// [`EVENTS_READ_TIMEOUT`] of silence.
    pub async fn events(
        &self,
        from: Option<&str>,
        filters: &[(&str, &str)],
    ) -> Result<EventStream, ClientError> {
        let mut query: Vec<(&str, &str)> = filters.to_vec();
        if let Some(from) = from {
            query.push(("from", from));
        }
        let url = self.url("/api/v0/events");
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(DEFAULT_TIMEOUT)
            .read_timeout(EVENTS_READ_TIMEOUT)
            .build()
            .map_err(transport)?;
        let response = http
            .get(&url)
            .query(&query)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.map_err(transport)?;
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(Answer {
                url,
                status,
                json,
                token: None,
            }
            .into_error());
        }
        Ok(EventStream {
            url,
            response,
            buf: Vec::new(),
            read: 0,
            id: None,
            event: None,
            data: None,
            last_id: from.map(str::to_owned),
            comments: 0,
        })
    }
}

/// Milliseconds since the Unix epoch on this machine's clock: the time a
/// signed request is stamped with (nodes accept it within a few minutes of
/// theirs).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `path?limit=N[&before=ID]`.
fn page_path(path: &str, limit: usize, before: Option<PostId>) -> String {
    match before {
        None => format!("{path}?limit={limit}"),
        Some(b) => format!("{path}?limit={limit}&before={b}"),
    }
}

/// `request` with the JSON body `{"at_ms", "signature"}` of `action` signed
/// now by `key`; unchanged (no body) without a key.
fn signed_body(
    request: reqwest::RequestBuilder,
    action: &Action<'_>,
    key: Option<&Keypair>,
) -> reqwest::RequestBuilder {
    match key {
        None => request,
        Some(key) => {
            let at_ms = now_ms();
            let signature = signing::signature_to_hex(&action.sign(key, at_ms));
            request.json(&json!({"at_ms": at_ms, "signature": signature}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode, json: Value) -> Answer {
        Answer {
            url: "http://node/api/v0/p".into(),
            status,
            json,
            token: None,
        }
    }

    #[test]
    fn a_slowdown_answer_is_its_own_error() {
        let e = answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "SLOWDOWN", "retry_after_ms": 420,
                   "error": "node overloaded, retry in 420 ms", "body": null}),
        )
        .ok_body()
        .unwrap_err();
        assert!(matches!(e, ClientError::SlowDown { .. }), "{e:?}");
        assert_eq!(e.retry_after_ms(), Some(420));
        assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(e.message(), Some("node overloaded, retry in 420 ms"));
        assert_eq!(
            e.to_string(),
            "http://node/api/v0/p: node overloaded, retry in 420 ms"
        );
        // Without a hint, a default wait.
        let e = answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "SLOWDOWN"}),
        )
        .ok_body()
        .unwrap_err();
        assert_eq!(e.retry_after_ms(), Some(DEFAULT_RETRY_AFTER_MS));
    }

    #[test]
    fn other_unavailability_stays_a_refusal() {
        let e = answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "ERROR", "error": "node is shutting down", "body": null}),
        )
        .ok_body()
        .unwrap_err();
        assert!(matches!(e, ClientError::Refused { .. }), "{e:?}");
        assert_eq!(e.retry_after_ms(), None);
        assert_eq!(e.message(), Some("node is shutting down"));
    }
}
