#![no_main]
//! StreamFramer never panics, and cutting the same bytes at arbitrary points yields the same
//! frames (and the same error, if any) as feeding them at once.
use libfuzzer_sys::fuzz_target;
use sagw_sip::{Frame, Limits, ParseError, StreamFramer};

fn run(data: &[u8], cuts: &[usize], limits: &Limits) -> (Vec<Frame>, Option<ParseError>) {
    let mut f = StreamFramer::new(limits.clone());
    let mut frames = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(start, data.len());
        f.push(&data[start..cut]);
        start = cut;
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|input: &[u8]| {
    // First byte chooses the split points, the rest is the stream.
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_message_bytes: 4096,
        max_headers: 32,
        max_line_bytes: 512,
        ..Limits::default()
    };
    let whole = run(data, &[], &limits);
    let step = usize::from(seed % 64) + 1;
    let cuts: Vec<usize> = (step..data.len()).step_by(step).collect();
    let split = run(data, &cuts, &limits);
    // Same frames; both runs fail or neither does (the variant may differ: a run that sees a
    // header section longer than the limit in pieces reports TooLarge where the whole-input run
    // may first meet an over-long line).
    assert_eq!(whole.0, split.0);
    assert_eq!(
        whole.1.is_some(),
        split.1.is_some(),
        "{:?} vs {:?}",
        whole.1,
        split.1
    );
    for frame in &whole.0 {
        if let Frame::Message(m) = frame {
            let bytes = m.to_bytes();
            assert!(bytes.len() <= limits.max_message_bytes);
        }
    }
});
