use hearsay_crdt::*;
const T0: u64 = 1_700_000_000_000;
#[test]
fn explore() {
    let new = NewPost {
        author: UserName::new("ann").unwrap(),
        body: "flip me".into(),
        reply_to: None,
    };
    let mut a = Replica::new(Keypair::from_secret([3; 32]), MemoryDocs::default()).unwrap();
    let (p, mut deltas) = a.create_post(&new, None, T0).unwrap();
    deltas.push(a.edit_post(p.id, 2, 2, "FL", T0 + 1).unwrap());
    std::panic::set_hook(Box::new(|_| {}));
    for fix in [false, true] {
        for which in [0usize, 3] {
            let d = &deltas[which];
            let mut counts = std::collections::BTreeMap::new();
            for k in 0..d.change.len() {
                for mask in [0x01u8, 0x80] {
                    let mut change = d.change.clone();
                    change[k] ^= mask;
                    if fix {
                        if let Ok(c) = automerge::Change::from_bytes(change.clone()) {
                            let h = c.hash();
                            change[4..8].copy_from_slice(&h.0[..4]);
                        }
                    }
                    let bad = Delta::sign(
                        &Keypair::from_secret([3; 32]),
                        d.seq,
                        d.doc.clone(),
                        change,
                        T0,
                    )
                    .unwrap();
                    let r = std::panic::catch_unwind(|| {
                        let mut r =
                            Replica::new(Keypair::from_secret([5; 32]), MemoryDocs::default())
                                .unwrap();
                        let out = r.receive(deltas[..which].iter().cloned());
                        assert!(out.rejected.is_empty());
                        let out = r.receive([bad]);
                        (
                            out.accepted.len(),
                            out.rejected.iter().map(|e| e.kind()).collect::<Vec<_>>(),
                            r.has_held(),
                            r.version_vector().sum(),
                        )
                    });
                    let key = match r {
                        Ok(o) => format!("{o:?}"),
                        Err(_) => {
                            if counts.get("PANIC").is_none() {
                                eprintln!(
                                    "first panic which={which} k={k} mask={mask:#x} len={}",
                                    d.change.len()
                                );
                            }
                            "PANIC".to_string()
                        }
                    };
                    *counts.entry(key).or_insert(0) += 1;
                }
            }
            eprintln!("fixed_checksum={fix} which={which} {counts:?}");
        }
    }
}
