//! A process-wide setting with an environment variable as its default, the shape of both kernel
//! toggles (`NASNET_KERNELS`, `NASNET_CUDA_KERNELS`): what the program set, else what the
//! variable says (read once, at the first look), else a fixed default.

use std::sync::atomic::{AtomicU8, Ordering};

/// No value chosen or read yet.
const UNSET: u8 = 0;

/// One setting of type `T`, one of `values`, kept as its index + 1 in an atomic so that reading
/// it is one relaxed load.
pub(crate) struct Switch<T: 'static> {
    env: &'static str,
    parse: fn(&str) -> Option<T>,
    default: T,
    values: &'static [T],
    code: AtomicU8,
}

impl<T: Copy + PartialEq + 'static> Switch<T> {
    /// A setting read from `env` through `parse` (`None`: the variable counts as unset), else
    /// `default`; every value it can take is in `values` (at most 254).
    pub const fn new(
        env: &'static str,
        parse: fn(&str) -> Option<T>,
        default: T,
        values: &'static [T],
    ) -> Self {
        Switch {
            env,
            parse,
            default,
            values,
            code: AtomicU8::new(UNSET),
        }
    }

    /// The value: the one [`Switch::set`] chose, else the variable's (read on the first call),
    /// else the default.
    pub fn get(&self) -> T {
        if self.code.load(Ordering::Relaxed) == UNSET {
            let from_env = std::env::var(self.env)
                .ok()
                .and_then(|v| (self.parse)(&v))
                .unwrap_or(self.default);
            // A concurrent `set` wins over the environment.
            let _ = self.code.compare_exchange(
                UNSET,
                self.code_of(from_env),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let index = usize::from(self.code.load(Ordering::Relaxed)) - 1;
        self.values[index]
    }

    /// Chooses `value` for the whole process, over the variable.
    pub fn set(&self, value: T) {
        self.code.store(self.code_of(value), Ordering::Relaxed);
    }

    /// The stored code of `value`.
    fn code_of(&self, value: T) -> u8 {
        let index = self
            .values
            .iter()
            .position(|&v| v == value)
            .expect("a switch's value is one of its values");
        u8::try_from(index + 1).expect("a switch has at most 254 values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: [char; 3] = ['a', 'b', 'c'];

    fn parse(v: &str) -> Option<char> {
        v.chars().next().filter(|c| VALUES.contains(c))
    }

    /// An unset variable gives the default, `set` overrides it, and the last `set` wins.
    #[test]
    fn the_default_then_what_was_set() {
        static S: Switch<char> = Switch::new("NASNET_TEST_SWITCH_NEVER_SET", parse, 'b', &VALUES);
        assert_eq!(S.get(), 'b');
        S.set('c');
        assert_eq!(S.get(), 'c');
        S.set('a');
        assert_eq!(S.get(), 'a');
    }
}
