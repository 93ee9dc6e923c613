//! Benchmarks of the protocol codec's hot paths: framing, passthrough, decoding and ReadyForQuery status.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pgsluice::protocol::backend::{ready_for_query_status, tag as btag, BackendMessage};
use pgsluice::protocol::frontend::{Bind, FrontendMessage, Parse};
use pgsluice::protocol::{Frame, Framer, Passthrough, Step};

const MAX: usize = 1 << 24;

/// 100 DataRows of three columns each, as a server would send them.
fn data_rows() -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..100u32 {
        let mut body = Vec::new();
        body.extend_from_slice(&3i16.to_be_bytes());
        for col in [i.to_string(), format!("name-{i}"), "x".repeat(40)] {
            body.extend_from_slice(&(col.len() as i32).to_be_bytes());
            body.extend_from_slice(col.as_bytes());
        }
        BackendMessage::DataRow(body.into()).encode(&mut out);
    }
    out.freeze()
}

fn framing(c: &mut Criterion) {
    let rows = data_rows();
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(rows.len() as u64));
    let framer = Framer::new(MAX);
    g.bench_function("framer_100_data_rows", |b| {
        b.iter_batched(
            || BytesMut::from(&rows[..]),
            |mut buf| {
                let mut n = 0;
                while let Some(f) = framer.next_frame(&mut buf).unwrap() {
                    n += f.body().len();
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("passthrough_100_data_rows", |b| {
        b.iter(|| {
            let mut pt = Passthrough::default();
            let mut buf: &[u8] = &rows;
            let mut messages = 0;
            loop {
                let n = match pt.step(buf, MAX).unwrap() {
                    Step::Message { header, available } => {
                        messages += usize::from(header.tag == btag::DATA_ROW);
                        available
                    }
                    Step::Body { n } => n,
                    Step::NeedMore => break,
                };
                buf = &buf[n..];
                pt.advance(n);
            }
            black_box(messages)
        })
    });
    g.finish();
}

fn frame_of(msg: &FrontendMessage) -> Frame {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    Framer::new(MAX).next_frame(&mut out).unwrap().unwrap()
}

fn decoding(c: &mut Criterion) {
    let parse = frame_of(&FrontendMessage::Parse(Parse {
        name: Bytes::from_static(b"s_42"),
        sql: Bytes::from_static(b"SELECT id, name FROM users WHERE id = $1 AND org = $2"),
        param_types: vec![23, 25],
    }));
    let bind = frame_of(&FrontendMessage::Bind(Bind::new(
        b"",
        b"s_42",
        &[0],
        &[Some(b"12345"), Some(b"acme")],
        &[1],
    )));
    let query = frame_of(&FrontendMessage::Query {
        sql: Bytes::from_static(b"SELECT 1"),
    });
    let mut g = c.benchmark_group("decode");
    for (name, frame) in [("parse", &parse), ("bind", &bind), ("query", &query)] {
        g.bench_function(name, |b| {
            b.iter(|| FrontendMessage::decode(black_box(frame)).unwrap())
        });
    }
    g.bench_function("ready_for_query_status", |b| {
        b.iter(|| ready_for_query_status(black_box(b"T")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, framing, decoding);
criterion_main!(benches);
