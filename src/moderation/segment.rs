//! Where text is cut for checking: a streamed reply into segments (released
//! to the client one checked segment at a time), and any text into parts
//! within msgSecCheck's length limit.

/// msgSecCheck's limit on `content`, in characters.
pub const MAX_CHECK_CHARS: usize = 2500;

/// Consecutive parts share this many characters, so a phrase that straddles
/// a cut is still seen whole by one check.
pub const OVERLAP_CHARS: usize = 50;

/// `text` as parts of at most `max` characters that together cover it, each
/// starting `OVERLAP_CHARS` before the previous one ended.
pub fn parts(text: &str, max: usize) -> Vec<&str> {
    let idx: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let chars = idx.len() - 1;
    if chars <= max {
        return vec![text];
    }
    let step = max.saturating_sub(OVERLAP_CHARS).max(1);
    let mut out = vec![];
    let mut start = 0;
    loop {
        let end = (start + max).min(chars);
        out.push(&text[idx[start]..idx[end]]);
        if end == chars {
            return out;
        }
        start += step;
    }
}

fn ends_sentence(c: char, next: Option<char>) -> bool {
    match c {
        '。' | '！' | '？' | '；' | '…' | '\n' => true,
        '.' | '!' | '?' | ';' => next.is_some_and(char::is_whitespace),
        _ => false,
    }
}

/// The byte length of `pending`'s prefix that is ready to be checked: up to
/// its last sentence end, else its first `segment_chars` characters, else
/// (once the stream has ended) all of it. None: wait for more text.
pub fn ready(pending: &str, segment_chars: usize, ended: bool) -> Option<usize> {
    if pending.is_empty() {
        return None;
    }
    if ended {
        return Some(pending.len());
    }
    let mut last_end = None;
    let mut it = pending.char_indices().peekable();
    let mut count = 0;
    let mut at_limit = None;
    while let Some((i, c)) = it.next() {
        count += 1;
        let next = it.peek().map(|(_, n)| *n);
        if ends_sentence(c, next) {
            last_end = Some(i + c.len_utf8());
        }
        if count == segment_chars && at_limit.is_none() {
            at_limit = Some(i + c.len_utf8());
        }
    }
    last_end.or(at_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(parts("你好", 2500), vec!["你好"]);
    }

    #[test]
    fn long_text_is_cut_in_overlapping_parts_that_cover_it() {
        let text: String = (0..6000)
            .map(|i| char::from_u32(0x4e00 + (i % 500)).unwrap())
            .collect();
        let ps = parts(&text, 2500);
        assert_eq!(ps.len(), 3);
        assert!(ps.iter().all(|p| p.chars().count() <= 2500));
        assert!(text.starts_with(ps[0]) && text.ends_with(ps[2]));
        // each part begins OVERLAP_CHARS before the previous one ended
        let second_start: String = text.chars().skip(2450).take(10).collect();
        assert!(ps[1].starts_with(&second_start));
    }

    #[test]
    fn segments_end_at_sentence_ends_or_the_size_limit() {
        assert_eq!(ready("Hello there", 200, false), None);
        assert_eq!(ready("Hello. Wor", 200, false), Some(6));
        assert_eq!(ready("3.14 is", 200, false), None);
        assert_eq!(
            ready("你好。世界！再", 200, false),
            Some("你好。世界！".len())
        );
        assert_eq!(ready("abcdef", 4, false), Some(4));
        assert_eq!(ready("ab", 4, true), Some(2));
        assert_eq!(ready("", 4, true), None);
    }
}
