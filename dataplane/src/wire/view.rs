//! What every checked view shares (smoltcp style): a `Packet<T>` over a
//! buffer, `new_unchecked`, `new_checked` (= `new_unchecked`, then the
//! protocol's own `check_len`), `into_inner`, and big-endian field access
//! by offset. Each protocol file declares its view with [`view!`] and
//! writes `check_len` and the accessors.
//!
//! Invariant: after its `check_len` passed, no accessor of a view panics.

/// Declare a protocol's view: `view! { /// docs\n Packet }` makes
/// `pub struct Packet<T: AsRef<[u8]>>` with the shared methods; the
/// protocol's `impl` must provide `check_len(&self) -> Result<(), DropReason>`.
macro_rules! view {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap without checking; accessors may panic until `check_len` passes.
            pub const fn new_unchecked(buffer: T) -> $name<T> {
                $name { buffer }
            }

            /// Wrap and check (`check_len`).
            pub fn new_checked(buffer: T) -> Result<$name<T>, crate::drop::DropReason> {
                let p = $name::new_unchecked(buffer);
                p.check_len()?;
                Ok(p)
            }

            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The big-endian 16-bit field at `at`.
            #[allow(dead_code)]
            fn be16(&self, at: usize) -> u16 {
                let b = self.buffer.as_ref();
                u16::from_be_bytes([b[at], b[at + 1]])
            }

            /// The big-endian 32-bit field at `at`.
            #[allow(dead_code)]
            fn be32(&self, at: usize) -> u32 {
                let b = self.buffer.as_ref();
                u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Write the big-endian 16-bit field at `at`.
            #[allow(dead_code)]
            fn set16(&mut self, at: usize, v: u16) {
                self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }

            /// Write the big-endian 32-bit field at `at`.
            #[allow(dead_code)]
            fn set32(&mut self, at: usize, v: u32) {
                self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
    };
}

pub(super) use view;
