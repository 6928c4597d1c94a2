// Floor: N idle WebSocket devices in one Rust process (tokio, one thread per core), JSON ping every 15 s, answers
// server pings (tungstenite replies to a WebSocket ping on the next read). The Rust half of the engine's language
// choice (docs/engine.md); the Go half is ../go-floor/.
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args[1].clone();
    let n: usize = args[2].parse().expect("N");
    let hold: u64 = args[3].parse().expect("hold seconds");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let open = Arc::new(AtomicI64::new(0));
        let msgs = Arc::new(AtomicI64::new(0));
        for i in 0..n {
            let (ws, _) = match tokio_tungstenite::connect_async(format!("{url}/ws/rsfloor-{i}")).await {
                Ok(x) => x,
                Err(e) => {
                    println!("dial {i} {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            let (open, msgs) = (open.clone(), msgs.clone());
            tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let mut tick = tokio::time::interval(Duration::from_millis(15_000 + (i % 1000) as u64));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if tx.send(Message::text(r#"{"type":"ping","id":1,"t":1}"#)).await.is_err() { break; }
                        }
                        m = rx.next() => match m {
                            Some(Ok(_)) => { msgs.fetch_add(1, Ordering::Relaxed); }
                            _ => break,
                        },
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
            });
            if i % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!("connected {}", open.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs(hold)).await;
        println!("open {} msgs {}", open.load(Ordering::Relaxed), msgs.load(Ordering::Relaxed));
    });
}
