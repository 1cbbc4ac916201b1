//! The neighbour graph and its articulation points (Tarjan).
//!
//! An articulation point is a node whose failure splits the graph. A node
//! adjacent to one links to a node on another side of it (see
//! [`crate::Topology`]), so that one failure no longer partitions the mesh.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// An undirected graph as symmetric adjacency sets.
pub type Graph<P> = BTreeMap<P, BTreeSet<P>>;

/// Adds the undirected edge `a`–`b` (self loops are ignored).
pub(crate) fn add_edge<P: Copy + Ord>(g: &mut Graph<P>, a: P, b: P) {
    if a != b {
        g.entry(a).or_default().insert(b);
        g.entry(b).or_default().insert(a);
    }
}

/// The articulation points of `g` (every component), by Tarjan's
/// lowpoint algorithm, iterative so a long chain cannot overflow the stack.
/// Nodes that appear only as neighbours count as nodes.
pub fn articulation_points<P: Copy + Ord>(g: &Graph<P>) -> BTreeSet<P> {
    let mut nodes: BTreeSet<P> = g.keys().copied().collect();
    nodes.extend(g.values().flatten().copied());
    let nodes: Vec<P> = nodes.into_iter().collect();
    let index = |p: &P| nodes.binary_search(p).expect("every node indexed");
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, ns) in g {
        for b in ns {
            let (i, j) = (index(a), index(b));
            if i != j {
                adj[i].push(j);
                adj[j].push(i);
            }
        }
    }
    for a in &mut adj {
        a.sort_unstable();
        a.dedup();
    }

    const UNSEEN: usize = usize::MAX;
    let n = nodes.len();
    let (mut disc, mut low, mut parent) = (vec![UNSEEN; n], vec![0; n], vec![UNSEEN; n]);
    let mut time = 0;
    let mut out = BTreeSet::new();
    for root in 0..n {
        if disc[root] != UNSEEN {
            continue;
        }
        disc[root] = time;
        low[root] = time;
        time += 1;
        let mut root_children = 0;
        // (node, next neighbour to look at)
        let mut stack = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let (u, next) = *top;
            if let Some(&v) = adj[u].get(next) {
                top.1 += 1;
                if disc[v] == UNSEEN {
                    parent[v] = u;
                    disc[v] = time;
                    low[v] = time;
                    time += 1;
                    if u == root {
                        root_children += 1;
                    }
                    stack.push((v, 0));
                } else if v != parent[u] {
                    low[u] = low[u].min(disc[v]);
                }
            } else {
                stack.pop();
                if let Some(&(p, _)) = stack.last() {
                    low[p] = low[p].min(low[u]);
                    if p != root && low[u] >= disc[p] {
                        out.insert(nodes[p]);
                    }
                }
            }
        }
        if root_children > 1 {
            out.insert(nodes[root]);
        }
    }
    out
}

/// The nodes that `me` reaches only through an articulation point adjacent
/// to it: linking to any of them relieves that articulation point.
pub(crate) fn other_sides<P: Copy + Ord>(g: &Graph<P>, me: P) -> BTreeSet<P> {
    let aps = articulation_points(g);
    let mine = reach(g, me, None);
    let mut out = BTreeSet::new();
    for a in g.get(&me).into_iter().flatten().filter(|a| aps.contains(a)) {
        let without = reach(g, me, Some(*a));
        out.extend(mine.iter().filter(|p| **p != *a && !without.contains(*p)));
    }
    out
}

/// The nodes reachable from `from`, not passing through `avoid`.
fn reach<P: Copy + Ord>(g: &Graph<P>, from: P, avoid: Option<P>) -> BTreeSet<P> {
    let mut seen = BTreeSet::from([from]);
    let mut queue = VecDeque::from([from]);
    while let Some(u) = queue.pop_front() {
        for v in g.get(&u).into_iter().flatten() {
            if Some(*v) != avoid && seen.insert(*v) {
                queue.push_back(*v);
            }
        }
    }
    seen
}
