//! A cache of large freed blocks in front of the process's allocator, shared by all threads:
//! what PyTorch's caching allocator does for GPU memory, here for the activations of a CPU
//! training step.
//!
//! Why: a training step frees and allocates the same large buffers (activations, gradients)
//! every step. mimalloc keeps freed pages per thread for a while before it hands them back;
//! which thread frees what varies from step to step, so how much it holds at an epoch's peak
//! varied by 10–30 % between epochs (MAE on the digits: 73–91 MB), and handing pages back at
//! once made steps 20 % slower (every buffer faulted in and cleared again). Here a freed block of
//! [`MIN_BLOCK`] bytes or more is kept, by size class, for the next allocation of the same class
//! on any thread: after the first steps an epoch allocates nothing new from the system, and what
//! the cache holds at its peak is the most blocks of each class the step had alive at once: the
//! same every epoch. [`BlockCache::flush`] (at each epoch's end) hands everything back.
//!
//! Size classes: eight per power of two (a block at most 12.5 % larger than asked; its untouched
//! tail pages are never made resident). At most [`MAX_BLOCKS`] blocks and
//! [`BlockCache::max_bytes`] bytes are kept; a block beyond that goes back to the allocator at once.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks from this size (bytes) are cached; smaller ones go straight to the allocator.
pub const MIN_BLOCK: usize = 256 << 10;
/// The most blocks kept at once.
pub const MAX_BLOCKS: usize = 4096;
/// Every cached block is page-aligned, so that it serves any request of its class.
const ALIGN: usize = 4096;

/// The most bytes a cache keeps unless told otherwise ([`BlockCache::set_max_bytes`]).
pub const DEFAULT_MAX_BYTES: usize = 4 << 30;
/// The default slack of [`BlockCache::fresh`] (%).
pub const DEFAULT_SLACK_PCT: usize = 50;

/// The size class of a request of `size >= MIN_BLOCK` bytes: `size` rounded up to an eighth
/// of the power of two at or below it (a multiple of 32 KiB, so of the page).
pub fn class_of(size: usize) -> usize {
    let step = (1usize << (usize::BITS - 1 - size.leading_zeros())) / 8;
    size.div_ceil(step) * step
}

struct Slots {
    /// `(address, class)` of each cached block.
    blocks: [(usize, usize); MAX_BLOCKS],
    len: usize,
}

/// The cache, around another allocator: `CountingAlloc(BlockCache::new(MiMalloc))`.
pub struct BlockCache<A> {
    inner: A,
    slots: Mutex<Slots>,
    max: AtomicUsize,
    bytes: AtomicUsize,
    /// Bytes of cached-size blocks handed out and not yet freed, and the most there have been.
    out: AtomicUsize,
    peak_out: AtomicUsize,
    /// How far above `peak_out` the blocks handed out and the cache together may go before a
    /// miss hands cached blocks back, in 1/100 of `peak_out`.
    slack_pct: AtomicUsize,
}

impl<A: GlobalAlloc> BlockCache<A> {
    pub const fn new(inner: A) -> Self {
        BlockCache {
            inner,
            slots: Mutex::new(Slots {
                blocks: [(0, 0); MAX_BLOCKS],
                len: 0,
            }),
            max: AtomicUsize::new(DEFAULT_MAX_BYTES),
            bytes: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            peak_out: AtomicUsize::new(0),
            slack_pct: AtomicUsize::new(DEFAULT_SLACK_PCT),
        }
    }

    /// Sets the slack of [`BlockCache::fresh`], in % of the most bytes handed out at once.
    pub fn set_slack_pct(&self, pct: usize) {
        self.slack_pct.store(pct, Ordering::Relaxed);
    }

    fn handed_out(&self, class: usize) {
        let now = self.out.fetch_add(class, Ordering::Relaxed) + class;
        self.peak_out.fetch_max(now, Ordering::Relaxed);
    }

    /// The most bytes the cache keeps.
    pub fn max_bytes(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the most bytes the cache keeps (0: it keeps nothing).
    pub fn set_max_bytes(&self, b: usize) {
        self.max.store(b, Ordering::Relaxed);
    }

    /// Bytes in the cache now (freed blocks kept for reuse).
    pub fn cached_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn cached(layout: Layout) -> Option<usize> {
        (layout.size() >= MIN_BLOCK && layout.align() <= ALIGN).then(|| class_of(layout.size()))
    }

    fn block_layout(class: usize) -> Layout {
        // SAFETY: ALIGN is a power of two and a class is far below isize::MAX rounded
        unsafe { Layout::from_size_align_unchecked(class, ALIGN) }
    }

    /// A cached block of `class`, if there is one: the one freed last (the blocks are kept in
    /// the order they were freed).
    fn take(&self, class: usize) -> Option<*mut u8> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let len = s.len;
        let i = s.blocks[..len].iter().rposition(|b| b.1 == class)?;
        let (addr, _) = s.blocks[i];
        s.blocks.copy_within(i + 1..len, i);
        s.len -= 1;
        self.bytes.fetch_sub(class, Ordering::Relaxed);
        Some(addr as *mut u8)
    }

    /// Hands back the longest-kept blocks while the blocks handed out and the cache together
    /// pass `limit` bytes (0: all of them).
    fn hand_back_above(&self, limit: usize) {
        let out = self.out.load(Ordering::Relaxed);
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (mut n, mut freed) = (0, 0);
        let mut total = out + self.cached_bytes();
        while n < s.len && total > limit {
            let (addr, c) = s.blocks[n];
            // SAFETY: the block came from `inner.alloc` with this layout and is no one's
            unsafe { self.inner.dealloc(addr as *mut u8, Self::block_layout(c)) };
            freed += c;
            total -= c;
            n += 1;
        }
        let len = s.len;
        s.blocks.copy_within(n..len, 0);
        s.len -= n;
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
    }

    /// A new block of `class` from the allocator (already counted as handed out). First the
    /// longest-kept cached blocks go back while the blocks handed out (the new one included)
    /// and the cache together pass the most bytes ever handed out at once plus the slack:
    /// without that the cache keeps, of every size, as many blocks as were ever alive at
    /// once — for a masked LM, whose sizes change with each batch's masked tokens, 2.5 times
    /// the live heap's peak.
    fn fresh(&self, class: usize, zeroed: bool) -> *mut u8 {
        if self.cached_bytes() > 0 {
            let peak = self.peak_out.load(Ordering::Relaxed);
            self.hand_back_above(peak + peak / 100 * self.slack_pct.load(Ordering::Relaxed));
        }
        let layout = Self::block_layout(class);
        // SAFETY: a valid non-zero layout
        let p = unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        };
        if p.is_null() {
            self.out.fetch_sub(class, Ordering::Relaxed);
        }
        p
    }

    /// Keeps a freed block; `false` when the cache is full.
    fn keep(&self, ptr: *mut u8, class: usize) -> bool {
        if self.cached_bytes() + class > self.max_bytes() {
            return false;
        }
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if s.len == MAX_BLOCKS {
            return false;
        }
        let len = s.len;
        s.blocks[len] = (ptr as usize, class);
        s.len += 1;
        self.bytes.fetch_add(class, Ordering::Relaxed);
        true
    }

    /// Hands every cached block back to the allocator.
    pub fn flush(&self) {
        self.hand_back_above(0);
    }
}

// SAFETY: a cached block is handed out to one caller at a time (taken under the lock), is at
// least as large as asked and page-aligned (any alignment up to a page); every other request is
// forwarded unchanged.
unsafe impl<A: GlobalAlloc> GlobalAlloc for BlockCache<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::cached(layout) {
            Some(class) => {
                self.handed_out(class);
                match self.take(class) {
                    Some(p) => p,
                    None => self.fresh(class, false),
                }
            }
            None => unsafe { self.inner.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::cached(layout) {
            Some(class) => {
                self.handed_out(class);
                match self.take(class) {
                    Some(p) => {
                        // SAFETY: the block holds at least `layout.size()` bytes
                        unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                        p
                    }
                    None => self.fresh(class, true),
                }
            }
            None => unsafe { self.inner.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::cached(layout) {
            Some(class) => {
                self.out.fetch_sub(class, Ordering::Relaxed);
                if !self.keep(ptr, class) {
                    unsafe { self.inner.dealloc(ptr, Self::block_layout(class)) };
                }
            }
            None => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout of new_size with the old alignment
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::cached(layout), Self::cached(new)) {
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            // the same class: the block is already large enough
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                let p = unsafe { self.alloc(new) };
                if !p.is_null() {
                    // SAFETY: both hold at least the smaller size; distinct blocks
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system allocator, counting the bytes it holds.
    struct Counted(AtomicUsize);

    unsafe impl GlobalAlloc for Counted {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.0.fetch_add(layout.size(), Ordering::Relaxed);
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.0.fetch_sub(layout.size(), Ordering::Relaxed);
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[test]
    fn classes_are_eighths_of_a_power_of_two() {
        assert_eq!(class_of(MIN_BLOCK), MIN_BLOCK);
        assert_eq!(class_of(MIN_BLOCK + 1), MIN_BLOCK + MIN_BLOCK / 8);
        assert_eq!(class_of(1 << 20), 1 << 20);
        assert_eq!(class_of((1 << 20) + 5), (1 << 20) + (1 << 17));
        for s in [MIN_BLOCK, 300_000, 1_000_000, 7_654_321, 1 << 30] {
            let c = class_of(s);
            assert!(c >= s && (c - s) as f64 <= s as f64 / 8.0, "{s} → {c}");
            assert_eq!(c % 4096, 0, "{s} → {c}");
        }
    }

    #[test]
    fn a_freed_block_serves_the_next_request_of_its_class_and_flush_returns_it() {
        let cache = BlockCache::new(Counted(AtomicUsize::new(0)));
        let held = || cache.inner.0.load(Ordering::Relaxed);
        let l = Layout::from_size_align(1_000_000, 8).unwrap();
        unsafe {
            let a = cache.alloc(l);
            a.write_bytes(7, l.size());
            assert_eq!(held(), class_of(1_000_000));
            cache.dealloc(a, l);
            // kept: nothing handed back
            assert_eq!(held(), class_of(1_000_000));
            // a request of the same class gets the same block; zeroed when asked
            let l2 = Layout::from_size_align(1_010_000, 64).unwrap();
            let b = cache.alloc_zeroed(l2);
            assert_eq!(a, b);
            assert!(
                std::slice::from_raw_parts(b, l2.size())
                    .iter()
                    .all(|&x| x == 0)
            );
            // another class: a new block
            let l3 = Layout::from_size_align(3_000_000, 8).unwrap();
            let c = cache.alloc(l3);
            assert_eq!(held(), class_of(1_000_000) + class_of(3_000_000));
            // growing within the class keeps the block; past it moves the bytes
            c.write_bytes(9, l3.size());
            assert_eq!(cache.realloc(c, l3, 3_100_000), c);
            let l4 = Layout::from_size_align(3_100_000, 8).unwrap();
            let d = cache.realloc(c, l4, 5_000_000);
            assert_ne!(d, c);
            assert!(
                std::slice::from_raw_parts(d, l3.size())
                    .iter()
                    .all(|&x| x == 9)
            );
            let l5 = Layout::from_size_align(5_000_000, 8).unwrap();
            cache.dealloc(b, l2);
            cache.dealloc(d, l5);
            // small requests pass through
            let s = Layout::from_size_align(1000, 8).unwrap();
            let p = cache.alloc(s);
            assert_eq!(
                held(),
                class_of(1_000_000) + class_of(3_000_000) + class_of(5_000_000) + 1000
            );
            cache.dealloc(p, s);
            cache.flush();
            assert_eq!(held(), 0);
        }
    }

    #[test]
    fn a_miss_hands_back_the_longest_kept_blocks_first() {
        let cache = BlockCache::new(Counted(AtomicUsize::new(0)));
        let held = || cache.inner.0.load(Ordering::Relaxed);
        let mb = |n: usize| Layout::from_size_align(n << 20, 8).unwrap();
        unsafe {
            // at most 5 MiB handed out at once
            let (a, b, c) = (cache.alloc(mb(1)), cache.alloc(mb(1)), cache.alloc(mb(3)));
            cache.dealloc(a, mb(1));
            cache.dealloc(c, mb(3));
            cache.dealloc(b, mb(1));
            assert_eq!((held(), cache.cached_bytes()), (5 << 20, 5 << 20));
            // with the default slack (50 %: 7.5 MiB) a 2 MiB miss hands nothing back
            let d = cache.alloc(mb(2));
            assert_eq!((held(), cache.cached_bytes()), (7 << 20, 5 << 20));
            cache.dealloc(d, mb(2));
            // without slack: a 1 MiB request gets b (the block of its size freed last), then a
            // 4 MiB miss with 5 MiB out hands back the oldest blocks (a, c, the 2 MiB one) until
            // the blocks out and the cache are no more than the 5 MiB ever out at once
            cache.set_slack_pct(0);
            let e = cache.alloc(mb(1));
            assert_eq!(e, b);
            assert_eq!(cache.cached_bytes(), 6 << 20);
            let f = cache.alloc(mb(4));
            assert_eq!((held(), cache.cached_bytes()), (5 << 20, 0));
            cache.dealloc(e, mb(1));
            cache.dealloc(f, mb(4));
            cache.flush();
            assert_eq!(held(), 0);
        }
    }

    #[test]
    fn blocks_past_the_limit_go_back_at_once() {
        let cache = BlockCache::new(Counted(AtomicUsize::new(0)));
        let l = Layout::from_size_align(1 << 20, 8).unwrap();
        unsafe {
            let (a, b) = (cache.alloc(l), cache.alloc(l));
            // room for one block: the other is handed back
            cache.set_max_bytes(1 << 20);
            cache.dealloc(a, l);
            cache.dealloc(b, l);
            assert_eq!(cache.cached_bytes(), 1 << 20);
            assert_eq!(cache.inner.0.load(Ordering::Relaxed), 1 << 20);
            cache.flush();
            assert_eq!(cache.inner.0.load(Ordering::Relaxed), 0);
        }
    }
}
