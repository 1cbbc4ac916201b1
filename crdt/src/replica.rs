//! The IO-less replica: documents, local operations, remote deltas.
//!
//! A [`Replica`] turns local operations into signed deltas with the next
//! per-origin seq, and remote deltas into document state. It does no IO of
//! its own: documents come from a [`DocStore`], time comes in as arguments,
//! and what must be made durable (accepted deltas, saved documents) goes out
//! as return values.
//!
//! Remote deltas pass three gates:
//! 1. signature and shape ([`Delta::verify`], automerge change decoding);
//! 2. per-origin order: a delta at `have + 1` is accepted, one further ahead
//!    waits in a bounded buffer, one beyond the bound is an error (the gap is
//!    repaired by anti-entropy);
//! 3. causal order inside automerge: a change whose dependencies (from other
//!    origins) have not arrived yet is queued by automerge. Such a delta is
//!    "held": it is counted in [`Replica::version_vector`] (it is stored) but
//!    not in [`Replica::applied_version_vector`], so a checkpoint never claims
//!    a document contains it before it does.
//!
//! Accepted deltas are applied per document in one `apply_changes` batch:
//! automerge's cost per call grows with the document, its cost per change in
//! a batch does not (see BENCHMARKS.md).
//!
//! A post is one document and one delta. The list of all posts and each
//! author's list are derived from the post documents as they gain their
//! content ([`crate::lists`]), so no list is a document that grows with
//! every post. (`public/…` and `timeline/…` documents, where older versions
//! kept lists, still decode and apply like any document, and are not read.)

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};

use crate::delta::Delta;
use crate::docs::{NewPost, Post, Profile, post, profile};
use crate::error::{Error, Result};
use crate::identity::Keypair;
use crate::ids::{DocId, NodeId, PostId, UserName};
use crate::lists::{self, PostList};
use crate::post_cache::PostCache;
use crate::signing::PostSignature;
use crate::store::{DocCache, DocStore};
use crate::verdict::Verdict;
use crate::vv::VersionVector;

/// Bounds of a [`Replica`].
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Documents kept loaded in memory.
    pub cache_docs: usize,
    /// How far ahead of an origin's contiguous seq a delta may be buffered.
    pub max_seq_ahead: u64,
    /// Out-of-order deltas buffered over all origins.
    pub max_buffered: usize,
    /// Out-of-order deltas buffered per origin. When an origin's buffer is
    /// full, a delta nearer its contiguous seq evicts the farthest one
    /// (anti-entropy brings it again), and one farther is refused as a gap:
    /// so one origin cannot take the whole buffer.
    pub max_buffered_per_origin: usize,
    /// Accepted changes of one origin that automerge may hold back for
    /// missing dependencies. Beyond it, the origin's next deltas are refused
    /// as a gap (anti-entropy asks for them again later) until its held
    /// changes apply: so changes whose dependencies never come cannot pile
    /// up without end.
    pub max_held_per_origin: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            cache_docs: 4096,
            max_seq_ahead: 4096,
            max_buffered: 16_384,
            max_buffered_per_origin: 4096,
            max_held_per_origin: 4096,
        }
    }
}

/// What [`Replica::receive`] did with a batch of remote deltas.
///
/// `verdicts` is the answer the rest of the node acts on (gossip acceptance,
/// metrics, the anti-entropy trigger): one [`Verdict`] per input delta, in
/// input order. A delta buffered and released within the same call is
/// `Accepted`; one still waiting for an earlier seq is `Buffered`.
///
/// A change that automerge refuses (or that could not reach its document)
/// after its delta passed every gate is still `Accepted`: its seq is taken,
/// the origin signed it, every replica treats it alike, and the log must stay
/// gapless. Such deltas are listed in `inert` so they can be counted, never
/// blamed on the sender.
#[derive(Debug, Default)]
pub struct ReceiveOutcome {
    /// One verdict per input delta, in input order.
    pub verdicts: Vec<Verdict>,
    /// Newly accepted deltas, in per-origin seq order: the caller stores them.
    pub accepted: Vec<Delta>,
    /// The details of each `Rejected` verdict, in input order.
    pub rejected: Vec<Error>,
    /// The input deltas found `Duplicate`, with their input position: the
    /// caller compares them with the copies it holds, since a different
    /// delta signed with a seq already held is an equivocation.
    pub duplicates: Vec<(usize, Delta)>,
    /// Accepted deltas whose change is not in its document: `(origin, seq,
    /// why)`. Stored and in the version vector like any accepted delta.
    pub inert: Vec<(NodeId, u64, Error)>,
}

impl ReceiveOutcome {
    /// How many input deltas got the verdict `v`.
    pub fn count(&self, v: Verdict) -> usize {
        self.verdicts.iter().filter(|x| **x == v).count()
    }

    /// Input deltas still waiting in the out-of-order buffer.
    pub fn buffered(&self) -> usize {
        self.count(Verdict::Buffered)
    }

    /// Input deltas already held or already buffered.
    pub fn duplicates(&self) -> usize {
        self.count(Verdict::Duplicate)
    }

    /// Whether some delta is waiting for an earlier one: a gap to repair.
    pub fn has_gap(&self) -> bool {
        self.verdicts.iter().any(|v| v.is_gap())
    }
}

/// Whether the signatures of a group of remote deltas are still to be
/// checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signatures {
    /// Check each delta's signature.
    Unchecked,
    /// Already checked by the caller ([`Delta::decode_verified`] or
    /// [`Delta::verify`]), e.g. on the network thread, so that the check is
    /// paid once per hop and off the thread that applies.
    Checked,
}

/// Applies `changes` and reports, per hash in `lookups`, whether that change
/// is now in the document (false: queued for missing dependencies). Fails on an automerge
/// error or panic; the caller then restores the document from a copy, so no
/// broken state survives the unwind. Looking each change up again is part of
/// the guard: automerge 0.12 can accept a corrupted change and panic on the
/// next read of its change graph.
fn apply_guarded(
    doc: &mut Automerge,
    changes: Vec<Change>,
    lookups: &[ChangeHash],
) -> std::result::Result<Vec<bool>, String> {
    let run = std::panic::AssertUnwindSafe(|| {
        doc.apply_changes(changes)?;
        Ok::<_, automerge::AutomergeError>(
            lookups
                .iter()
                .map(|h| doc.get_change_by_hash(h).is_some())
                .collect(),
        )
    });
    match std::panic::catch_unwind(run) {
        Ok(Ok(present)) => Ok(present),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("automerge panicked applying it: {what}"))
        }
    }
}

/// One document change that automerge queued for missing dependencies.
#[derive(Debug, Clone)]
struct Held {
    origin: NodeId,
    seq: u64,
    hash: ChangeHash,
}

/// Whether a parsed change's header checksum (bytes 4..8 of the chunk) is the
/// start of its hash. `Change::from_bytes` does not check it, and automerge
/// 0.12 can panic applying a corrupted change that still parses.
fn checksum_matches(change: &Change) -> bool {
    change.raw_bytes().get(4..8) == Some(&change.hash().0[..4])
}

/// An IO-less hearsay replica over the document store `S`.
pub struct Replica<S> {
    key: Keypair,
    id: NodeId,
    store: S,
    cache: DocCache,
    config: ReplicaConfig,
    vv: VersionVector,
    buffer: BTreeMap<NodeId, BTreeMap<u64, (Delta, Change)>>,
    buffered: usize,
    held: BTreeMap<DocId, Vec<Held>>,
    /// Held changes per origin (the sum of `held` by origin).
    held_by: HashMap<NodeId, usize>,
    posts: PostCache,
    /// List keys whose insert failed, for the next checkpoint.
    unlisted: Vec<Vec<u8>>,
    /// The newest post of the authors looked up lately (`None`: none), so
    /// that a home timeline need not read the list of every followed user.
    /// Kept exact by every listing; cleared when full.
    newest_by: HashMap<UserName, Option<PostId>>,
}

/// Authors whose newest post a replica remembers.
const MAX_NEWEST_BY: usize = 1 << 16;

impl<S> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("revision", &self.vv.sum())
            .field("cached_docs", &self.cache.len())
            .field("buffered", &self.buffered)
            .finish_non_exhaustive()
    }
}

impl<S: DocStore> Replica<S> {
    /// Opens a replica whose stored documents contain at least `snapshot`;
    /// replay the deltas above it with [`Replica::replay`].
    pub fn open(
        key: Keypair,
        mut store: S,
        snapshot: VersionVector,
        config: ReplicaConfig,
    ) -> Result<Self> {
        let id = key.id();
        derive_lists(&mut store)?;
        let posts = PostCache::new(config.cache_docs);
        Ok(Replica {
            cache: DocCache::new(config.cache_docs, ActorId::from(id.as_bytes())),
            key,
            id,
            store,
            config,
            vv: snapshot,
            buffer: BTreeMap::new(),
            buffered: 0,
            held: BTreeMap::new(),
            held_by: HashMap::new(),
            posts,
            unlisted: Vec::new(),
            newest_by: HashMap::new(),
        })
    }

    /// An empty replica.
    pub fn new(key: Keypair, store: S) -> Result<Self> {
        Self::open(key, store, VersionVector::new(), ReplicaConfig::default())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn key(&self) -> &Keypair {
        &self.key
    }

    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    /// Every delta accepted, stored or not yet applied.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// The deltas whose changes are in the documents: the vector a checkpoint
    /// of the documents may record.
    pub fn applied_version_vector(&self) -> VersionVector {
        let mut vv = self.vv.clone();
        for held in self.held.values().flatten() {
            if held.seq <= vv.get(&held.origin) {
                vv.set(held.origin, held.seq - 1);
            }
        }
        vv
    }

    /// Deltas waiting in the out-of-order buffer.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The delta of `origin` at `seq` waiting in the out-of-order buffer.
    pub fn buffered_delta(&self, origin: &NodeId, seq: u64) -> Option<&Delta> {
        self.buffer.get(origin)?.get(&seq).map(|(d, _)| d)
    }

    /// Accepted changes of `origin` that automerge holds back for missing
    /// dependencies.
    pub fn held_of(&self, origin: &NodeId) -> usize {
        self.held_by.get(origin).copied().unwrap_or(0)
    }

    /// Saves every changed document to the store and returns the version
    /// vector the saved documents are known to contain.
    pub fn checkpoint(&mut self) -> Result<VersionVector> {
        if !self.unlisted.is_empty() {
            self.store.list_insert(&self.unlisted)?;
            self.unlisted.clear();
        }
        self.cache.flush(&mut self.store)?;
        Ok(self.applied_version_vector())
    }

    // ---- local operations -------------------------------------------------

    fn local_change(
        &mut self,
        doc: DocId,
        now_ms: u64,
        create: bool,
        op: impl FnOnce(&mut Automerge) -> Result<()>,
    ) -> Result<Delta> {
        let seq = self.vv.get(&self.id) + 1;
        let d = self
            .cache
            .get(&mut self.store, &doc, create)?
            .ok_or_else(|| Error::invalid(format!("unknown document {doc}")))?;
        op(d)?;
        if let DocId::Post(id) = &doc {
            self.posts.forget(id);
        }
        let change = d
            .get_last_local_change()
            .ok_or_else(|| Error::invalid(format!("operation on {doc} changed nothing")))?;
        // Bounded inputs keep every change far below the delta size limit.
        let delta = Delta::sign(
            &self.key,
            seq,
            doc.clone(),
            change.raw_bytes().to_vec(),
            now_ms,
        )?;
        self.cache.mark_dirty(&doc);
        self.vv.set(self.id, seq);
        Ok(delta)
    }

    /// Creates a post: its document, listed among all posts and the
    /// author's. Returns the post and its one delta.
    ///
    /// Unsigned (`signature` is `None`), the replica makes the id from its
    /// clock, its id and its next seq. Signed, the post takes the id its
    /// author chose and signed ([`PostSignature`], made by the client: no
    /// node holds a user's secret), and is refused with
    /// [`Error::BadUserSignature`] unless the signature verifies. Whether the
    /// key is the one registered for the author's name, and whether the id's
    /// time is plausible, is the node's policy, not the data model's.
    pub fn create_post(
        &mut self,
        new: &NewPost,
        signature: Option<&PostSignature>,
        now_ms: u64,
    ) -> Result<(Post, Delta)> {
        let id = match signature {
            Some(sig) => sig.id,
            None => PostId::new(now_ms, &self.id, self.vv.get(&self.id) + 1),
        };
        self.create_post_as(new, id, signature, now_ms)
    }

    /// [`Replica::create_post`] of an unsigned post under an id chosen
    /// beforehand (a post whose permalink slug was claimed for that id
    /// before the post was written).
    pub fn create_post_with_id(
        &mut self,
        new: &NewPost,
        id: PostId,
        now_ms: u64,
    ) -> Result<(Post, Delta)> {
        self.create_post_as(new, id, None, now_ms)
    }

    fn create_post_as(
        &mut self,
        new: &NewPost,
        id: PostId,
        signature: Option<&PostSignature>,
        now_ms: u64,
    ) -> Result<(Post, Delta)> {
        crate::docs::check_body_len(&new.body)?;
        let doc = DocId::Post(id);
        if self.cache.get(&mut self.store, &doc, false)?.is_some() {
            return Err(Error::invalid(format!("post {id} already exists")));
        }
        if let Some(sig) = signature
            && !sig.verify(new)
        {
            return Err(Error::BadUserSignature(format!(
                "the signature of post {id} does not verify with key {}",
                sig.author_key
            )));
        }
        let delta =
            self.local_change(doc, now_ms, true, |d| post::create(d, id, new, signature))?;
        self.list(&new.author, id)?;
        let post = self.post(id)?.expect("post just created");
        Ok((post, delta))
    }

    /// Replaces `delete` characters at `pos` of a post's body with `insert`.
    pub fn edit_post(
        &mut self,
        id: PostId,
        pos: usize,
        delete: usize,
        insert: &str,
        now_ms: u64,
    ) -> Result<Delta> {
        self.local_change(DocId::Post(id), now_ms, false, |d| {
            post::edit(d, pos, delete, insert, now_ms)
        })
    }

    /// Tombstones a post.
    pub fn delete_post(&mut self, id: PostId, now_ms: u64) -> Result<Delta> {
        self.local_change(DocId::Post(id), now_ms, false, |d| post::delete(d, now_ms))
    }

    pub fn follow(&mut self, user: &UserName, whom: &UserName, now_ms: u64) -> Result<Delta> {
        if user == whom {
            return Err(Error::invalid("a user cannot follow themselves"));
        }
        self.local_change(DocId::Profile(user.clone()), now_ms, true, |d| {
            profile::follow(d, whom)
        })
    }

    pub fn unfollow(&mut self, user: &UserName, whom: &UserName, now_ms: u64) -> Result<Delta> {
        self.local_change(DocId::Profile(user.clone()), now_ms, true, |d| {
            profile::unfollow(d, whom)
        })
    }

    pub fn set_profile(
        &mut self,
        user: &UserName,
        display_name: Option<&str>,
        public_key: Option<NodeId>,
        now_ms: u64,
    ) -> Result<Delta> {
        if display_name.is_none() && public_key.is_none() {
            return Err(Error::invalid(
                "set_profile needs a display name or a public key",
            ));
        }
        self.local_change(DocId::Profile(user.clone()), now_ms, true, |d| {
            profile::set(d, display_name, public_key)
        })
    }

    // ---- remote deltas ----------------------------------------------------

    /// Verifies, orders and applies remote deltas.
    pub fn receive(&mut self, deltas: impl IntoIterator<Item = Delta>) -> ReceiveOutcome {
        self.receive_groups(vec![deltas.into_iter().collect()])
            .pop()
            .unwrap_or_default()
    }

    /// [`Replica::receive`] for several independent groups of deltas (the
    /// messages of many peers that queued together), with one outcome per
    /// group but one automerge batch per document for all of them.
    pub fn receive_groups(&mut self, groups: Vec<Vec<Delta>>) -> Vec<ReceiveOutcome> {
        self.receive_groups_with(
            groups
                .into_iter()
                .map(|g| (g, Signatures::Unchecked))
                .collect(),
        )
    }

    /// [`Replica::receive_groups`], saying per group whether its signatures
    /// were already checked.
    pub fn receive_groups_with(
        &mut self,
        groups: Vec<(Vec<Delta>, Signatures)>,
    ) -> Vec<ReceiveOutcome> {
        self.ingest(groups)
    }

    /// Applies deltas read back from this node's own log (verified when they
    /// were first accepted), e.g. after a restart.
    pub fn replay(&mut self, deltas: impl IntoIterator<Item = Delta>) -> ReceiveOutcome {
        self.ingest(vec![(deltas.into_iter().collect(), Signatures::Checked)])
            .pop()
            .unwrap_or_default()
    }

    fn ingest(&mut self, groups: Vec<(Vec<Delta>, Signatures)>) -> Vec<ReceiveOutcome> {
        let mut outs = Vec::with_capacity(groups.len());
        let mut spans = Vec::with_capacity(groups.len());
        let mut parked_by_group = Vec::with_capacity(groups.len());
        let mut ready: Vec<(Delta, Change)> = Vec::new();
        for (group, signatures) in groups {
            let verify = signatures == Signatures::Unchecked;
            let mut out = ReceiveOutcome {
                verdicts: Vec::with_capacity(group.len()),
                ..ReceiveOutcome::default()
            };
            // Input position, origin and seq of each delta sent to the buffer.
            let mut parked: Vec<(usize, NodeId, u64)> = Vec::new();
            let start = ready.len();
            for (at, delta) in group.into_iter().enumerate() {
                let (origin, seq) = (delta.origin, delta.seq);
                let verdict = self.admit(delta, verify, &mut ready, &mut out, at);
                if verdict == Verdict::Buffered {
                    parked.push((at, origin, seq));
                }
                out.verdicts.push(verdict);
            }
            spans.push(start..ready.len());
            parked_by_group.push(parked);
            outs.push(out);
        }
        // A refused change stays accepted (its seq is taken: the origin
        // signed it, and the log must stay gapless) but is reported as inert.
        for (i, e) in self.apply(&ready) {
            if let Some(g) = spans.iter().position(|span| span.contains(&i)) {
                let d = &ready[i].0;
                outs[g].inert.push((d.origin, d.seq, e));
            }
        }
        let mut ready = ready.into_iter().map(|(d, _)| d);
        for ((out, span), parked) in outs.iter_mut().zip(spans).zip(parked_by_group) {
            // Released by a later delta of the same call: accepted.
            for (at, origin, seq) in parked {
                if seq <= self.vv.get(&origin) {
                    out.verdicts[at] = Verdict::Accepted;
                }
            }
            out.accepted = ready.by_ref().take(span.len()).collect();
        }
        outs
    }

    /// Passes one delta through the seq and signature gates: moves it to
    /// `ready` (with what the buffer releases behind it), parks it in the
    /// buffer, or refuses it into `rejected`.
    fn admit(
        &mut self,
        delta: Delta,
        verify: bool,
        ready: &mut Vec<(Delta, Change)>,
        out: &mut ReceiveOutcome,
        at: usize,
    ) -> Verdict {
        let rejected = &mut out.rejected;
        let mut refuse = |e: Error| {
            let kind = e.kind();
            rejected.push(e);
            Verdict::Rejected(kind)
        };
        let have = self.vv.get(&delta.origin);
        let origin_buffer = self.buffer.get(&delta.origin);
        let in_buffer = origin_buffer.is_some_and(|b| b.contains_key(&delta.seq));
        if delta.seq <= have || in_buffer {
            out.duplicates.push((at, delta));
            return Verdict::Duplicate;
        }
        let gap = Error::SeqGap {
            origin: delta.origin,
            have,
            got: delta.seq,
            bound: self.config.max_seq_ahead,
        };
        let ahead = delta.seq > have + 1;
        // A full origin buffer takes a delta only in place of a farther one.
        let evict = match origin_buffer {
            Some(b) if ahead && b.len() >= self.config.max_buffered_per_origin => {
                match b.last_key_value() {
                    Some((&farthest, _)) if farthest > delta.seq => Some(farthest),
                    _ => return refuse(gap),
                }
            }
            _ => None,
        };
        if delta.seq - have > self.config.max_seq_ahead
            || (ahead && evict.is_none() && self.buffered >= self.config.max_buffered)
            || self.held_by.get(&delta.origin).copied().unwrap_or(0)
                >= self.config.max_held_per_origin
        {
            return refuse(gap);
        }
        if verify && let Err(e) = delta.verify() {
            return refuse(e);
        }
        let change = match Change::from_bytes(delta.change.clone()) {
            Ok(c) if checksum_matches(&c) => c,
            Ok(_) => {
                return refuse(Error::malformed(
                    "automerge change",
                    "checksum does not match the change's contents",
                ));
            }
            Err(e) => return refuse(Error::malformed("automerge change", e.to_string())),
        };
        if ahead {
            let waiting = self.buffer.entry(delta.origin).or_default();
            if let Some(farthest) = evict {
                waiting.remove(&farthest);
                self.buffered -= 1;
            }
            waiting.insert(delta.seq, (delta, change));
            self.buffered += 1;
            return Verdict::Buffered;
        }
        let origin = delta.origin;
        self.vv.set(origin, delta.seq);
        ready.push((delta, change));
        // Release what the buffer holds right behind it.
        if let Some(waiting) = self.buffer.get_mut(&origin) {
            while let Some(entry) = waiting.first_entry() {
                if *entry.key() != self.vv.get(&origin) + 1 {
                    break;
                }
                let (d, c) = entry.remove();
                self.buffered -= 1;
                self.vv.set(origin, d.seq);
                ready.push((d, c));
            }
            if waiting.is_empty() {
                self.buffer.remove(&origin);
            }
        }
        Verdict::Accepted
    }

    /// Applies accepted deltas, one automerge batch per document, and
    /// returns the ones automerge refused, by position in `ready`.
    fn apply(&mut self, ready: &[(Delta, Change)]) -> Vec<(usize, Error)> {
        let mut by_doc: BTreeMap<&DocId, Vec<(usize, &Change)>> = BTreeMap::new();
        for (i, (delta, change)) in ready.iter().enumerate() {
            by_doc.entry(&delta.doc).or_default().push((i, change));
        }
        let mut refused = Vec::new();
        for (doc_id, items) in by_doc {
            refused.extend(self.apply_doc(doc_id, &items, ready));
        }
        refused
    }

    /// Applies one document's changes in one batch. A change that automerge
    /// refuses, or panics on (a signed but malicious change can make
    /// automerge 0.12 panic), must neither crash the node nor leave the
    /// document half-changed: the batch runs against the live document with
    /// a copy kept aside, and on failure the copy is restored and the changes
    /// are applied one by one, each guarded the same way, so that only the
    /// bad ones are refused. Every replica refuses the same changes, so
    /// replicas still converge.
    fn apply_doc(
        &mut self,
        doc_id: &DocId,
        items: &[(usize, &Change)],
        ready: &[(Delta, Change)],
    ) -> Vec<(usize, Error)> {
        let doc = match self.cache.get(&mut self.store, doc_id, true) {
            Ok(doc) => doc.expect("created on demand"),
            Err(e) => {
                return items
                    .iter()
                    .map(|(i, _)| (*i, Error::Store(e.to_string())))
                    .collect();
            }
        };
        // Look up the batch's changes and the ones queued before: applying
        // this batch may apply those too.
        let held_before = self.held.remove(doc_id).unwrap_or_default();
        for h in &held_before {
            if let Some(n) = self.held_by.get_mut(&h.origin) {
                *n -= 1;
                if *n == 0 {
                    self.held_by.remove(&h.origin);
                }
            }
        }
        let lookups: Vec<ChangeHash> = items
            .iter()
            .map(|(_, c)| c.hash())
            .chain(held_before.iter().map(|h| h.hash))
            .collect();
        let mut refused = Vec::new();
        let backup = doc.clone();
        let batch: Vec<Change> = items.iter().map(|(_, c)| (*c).clone()).collect();
        let present = match apply_guarded(doc, batch, &lookups) {
            Ok(present) => present,
            Err(_) => {
                *doc = backup;
                for (i, change) in items {
                    let before = doc.clone();
                    if let Err(why) = apply_guarded(doc, vec![(*change).clone()], &lookups) {
                        *doc = before;
                        refused.push((*i, Error::malformed("automerge change", why)));
                    }
                }
                // The state was checked by the last successful step already.
                apply_guarded(doc, Vec::new(), &lookups)
                    .unwrap_or_else(|_| vec![true; lookups.len()])
            }
        };
        let (now_in_batch, now_in_held) = present.split_at(items.len());
        // A post document that has its content is listed (again: the insert
        // is idempotent, and cheaper than finding out whether this batch
        // brought the content).
        let listed = match doc_id {
            DocId::Post(id) => post::author(doc).map(|author| (author, *id)),
            _ => None,
        };
        let mut held: Vec<Held> = held_before
            .into_iter()
            .zip(now_in_held)
            .filter(|(_, p)| !**p)
            .map(|(h, _)| h)
            .collect();
        held.extend(
            items
                .iter()
                .zip(now_in_batch)
                .filter(|((i, _), p)| !**p && !refused.iter().any(|(r, _)| r == i))
                .map(|((i, c), _)| Held {
                    origin: ready[*i].0.origin,
                    seq: ready[*i].0.seq,
                    hash: c.hash(),
                }),
        );
        for h in &held {
            *self.held_by.entry(h.origin).or_default() += 1;
        }
        if !held.is_empty() {
            self.held.insert(doc_id.clone(), held);
        }
        self.cache.mark_dirty(doc_id);
        if let DocId::Post(id) = doc_id {
            self.posts.forget(id);
        }
        if let Some((author, id)) = listed
            && self.list(&author, id).is_err()
        {
            // The changes are in the document; only its listing failed. The
            // next checkpoint tries again, and fails if the store still does.
            self.unlisted.extend(lists::keys(&author, id));
            self.newest_by.clear();
        }
        refused
    }

    /// Lists post `id` by `author` (idempotent).
    fn list(&mut self, author: &UserName, id: PostId) -> Result<()> {
        self.store.list_insert(&lists::keys(author, id))?;
        if let Some(newest) = self.newest_by.get_mut(author) {
            *newest = (*newest).max(Some(id));
        }
        Ok(())
    }

    // ---- reads ------------------------------------------------------------

    /// The newest post id of `author`, if any.
    fn newest_by(&mut self, author: &UserName) -> Result<Option<PostId>> {
        if let Some(newest) = self.newest_by.get(author) {
            return Ok(*newest);
        }
        let newest = self
            .list_ids(PostList::By(author), None, 1)?
            .first()
            .copied();
        if self.newest_by.len() >= MAX_NEWEST_BY {
            self.newest_by.clear();
        }
        self.newest_by.insert(author.clone(), newest);
        Ok(newest)
    }

    /// The post `id`, if this replica has it.
    pub fn post(&mut self, id: PostId) -> Result<Option<Post>> {
        if let Some(p) = self.posts.get(&id) {
            return Ok(Some(p));
        }
        let read = self
            .cache
            .get(&mut self.store, &DocId::Post(id), false)?
            .and_then(|d| post::read(d, id));
        if let Some(p) = &read {
            self.posts.put(p.clone());
        }
        Ok(read)
    }

    /// At most `n` ids of `list` strictly older than `before`, newest first.
    fn list_ids(
        &mut self,
        list: PostList<'_>,
        before: Option<PostId>,
        n: usize,
    ) -> Result<Vec<PostId>> {
        let (start, end) = lists::range(list, before);
        Ok(self
            .store
            .list_range_rev(&start, &end, n)?
            .iter()
            .filter_map(|k| lists::id_of(k))
            .collect())
    }

    /// A page of `list`: up to `limit` posts older than `before`, newest
    /// first, skipping deleted posts (and, in an author's list, any post
    /// whose document names someone else).
    fn list_page(
        &mut self,
        list: PostList<'_>,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>> {
        let mut out = Vec::new();
        let mut cursor = before;
        while out.len() < limit {
            let ids = self.list_ids(list, cursor, limit - out.len())?;
            let Some(&last) = ids.last() else {
                break;
            };
            cursor = Some(last);
            for id in ids {
                if let Some(p) = self.post(id)?
                    && !p.deleted
                    && list_holds(list, &p)
                {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// Newest posts first, strictly older than `before`; deleted posts skipped.
    pub fn newest_posts(&mut self, limit: usize, before: Option<PostId>) -> Result<Vec<Post>> {
        self.list_page(PostList::All, limit, before)
    }

    /// One user's posts, newest first.
    pub fn user_posts(
        &mut self,
        user: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>> {
        self.list_page(PostList::By(user), limit, before)
    }

    /// A user's home timeline: the posts of everyone they follow, newest
    /// first, strictly older than `before`; deleted posts skipped.
    ///
    /// A merge of the followed users' lists. A max-heap holds each followed
    /// user's next post id, starting from the newest (remembered per author,
    /// so a user who has not posted lately costs no read), and a user's list
    /// is read in runs as long as the page only once the merge reaches it.
    /// The documents read are the profile and the posts on the page (plus
    /// deleted ones skipped), however many users the reader follows.
    pub fn home_timeline(
        &mut self,
        user: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>> {
        let follows = self.profile(user)?.follows;
        let run = limit.clamp(1, 64);
        let mut heap: BinaryHeap<(PostId, usize)> = BinaryHeap::new();
        for (i, whom) in follows.iter().enumerate() {
            let next = match self.newest_by(whom)? {
                Some(newest) if before.is_some_and(|b| newest >= b) => self
                    .list_ids(PostList::By(whom), before, 1)?
                    .first()
                    .copied(),
                newest => newest,
            };
            if let Some(id) = next {
                heap.push((id, i));
            }
        }
        // Per followed user reached by the merge: ids after the one in the
        // heap, oldest first (the next is at the back).
        let mut pending: HashMap<usize, Vec<PostId>> = HashMap::new();
        let mut out: Vec<Post> = Vec::new();
        while out.len() < limit {
            let Some((id, i)) = heap.pop() else {
                break;
            };
            let queue = pending.entry(i).or_default();
            if queue.is_empty() {
                *queue = self.list_ids(PostList::By(&follows[i]), Some(id), run)?;
                queue.reverse();
            }
            if let Some(next) = queue.pop() {
                heap.push((next, i));
            }
            if out.last().is_some_and(|p| p.id == id) {
                continue;
            }
            if let Some(p) = self.post(id)?
                && !p.deleted
                && p.author == follows[i]
            {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub fn profile(&mut self, user: &UserName) -> Result<Profile> {
        let doc = self
            .cache
            .get(&mut self.store, &DocId::Profile(user.clone()), false)?;
        Ok(doc.map(|d| profile::read(d, user)).unwrap_or(Profile {
            user: user.clone(),
            display_name: None,
            public_key: None,
            follows: Vec::new(),
        }))
    }

    /// Heads of a document (empty when unknown): equal heads, equal state.
    pub fn heads(&mut self, doc: &DocId) -> Result<Vec<ChangeHash>> {
        Ok(self
            .cache
            .get(&mut self.store, doc, false)?
            .map(|d| d.get_heads())
            .unwrap_or_default())
    }

    /// Every document id this replica holds, sorted.
    pub fn doc_ids(&mut self) -> Result<Vec<DocId>> {
        let mut ids: BTreeSet<DocId> = self.store.ids("")?.into_iter().collect();
        ids.extend(self.cache.cached_ids().cloned());
        Ok(ids.into_iter().collect())
    }

    /// Whether any document still waits for a change's dependencies.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Whether a post read through `list` belongs in it: any post in the list
/// of all, only the author's own in an author's list.
fn list_holds(list: PostList<'_>, p: &Post) -> bool {
    match list {
        PostList::All => true,
        PostList::By(user) => p.author == *user,
    }
}

/// Lists the posts of a store written before the post lists existed (once:
/// the marker records it). The deltas replayed after opening list whatever
/// the stored documents lack.
fn derive_lists<S: DocStore>(store: &mut S) -> Result<()> {
    let marker = lists::DERIVED_MARKER.to_vec();
    let mut end = marker.clone();
    end.push(0);
    if !store.list_range_rev(&marker, &end, 1)?.is_empty() {
        return Ok(());
    }
    for doc in store.ids("post/")? {
        let DocId::Post(id) = doc else { continue };
        let Some(bytes) = store.load(&doc)? else {
            continue;
        };
        let loaded = Automerge::load(&bytes)
            .map_err(|e| Error::Store(format!("stored document {doc} does not load: {e}")))?;
        if let Some(author) = post::author(&loaded) {
            store.list_insert(&lists::keys(&author, id))?;
        }
    }
    store.list_insert(&[marker])
}
