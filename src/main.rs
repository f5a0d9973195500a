use rbuild::executor::{confine, HELPER_SUBCOMMAND, PROBE_SUBCOMMAND};

fn main() {
    // Not dumpable: a RUN step that shares rbuild's uid (tiers without a
    // pid namespace) cannot ptrace rbuild or read its memory. The helpers
    // first write their own /proc/self id maps, which a non-dumpable
    // process no longer owns; the sandbox helper protects itself after.
    let helper = std::env::args()
        .nth(1)
        .is_some_and(|a| a == HELPER_SUBCOMMAND || a == PROBE_SUBCOMMAND);
    if !helper {
        confine::protect_self();
    }
    std::process::exit(rbuild::cli::main());
}
