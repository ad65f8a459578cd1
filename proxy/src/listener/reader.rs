//! A bounds-checked cursor over borrowed bytes, in the style of BoringSSL's `CBS`: every read
//! either returns the bytes (borrowed, never copied) or `None`, and never panics.

/// A cursor over a byte slice; reads advance it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

// === impl Reader ===

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, tail) = self.buf.split_first()?;
        self.buf = tail;
        Some(b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }

    /// A sub-reader over a `u8`-length-prefixed field.
    pub(crate) fn u8_prefixed(&mut self) -> Option<Reader<'a>> {
        let len = self.u8()?;
        self.bytes(usize::from(len)).map(Reader::new)
    }

    /// A sub-reader over a `u16`-length-prefixed field.
    pub(crate) fn u16_prefixed(&mut self) -> Option<Reader<'a>> {
        let len = self.u16()?;
        self.bytes(usize::from(len)).map(Reader::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_fields_and_stops_at_the_end() {
        let mut r = Reader::new(&[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.u16(), None, "only one byte left");
        assert_eq!(r.rest(), &[0x04], "a failed read consumes nothing");
        assert_eq!(r.bytes(2), None);
        assert_eq!(r.u8(), Some(4));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
    }

    #[test]
    fn length_prefixed_fields_must_fit() {
        let mut r = Reader::new(&[2, b'h', b'2', 5, b'x']);
        assert_eq!(r.u8_prefixed().map(|p| p.rest()), Some(&b"h2"[..]));
        assert!(r.u8_prefixed().is_none(), "declares 5 bytes, has 1");
        let mut r = Reader::new(&[0, 1, 0xff]);
        assert_eq!(r.u16_prefixed().map(|p| p.rest()), Some(&[0xff][..]));
    }
}
