use rbuild::executor::{confine, HELPER_SUBCOMMAND, PROBE_SUBCOMMAND};

fn main() {
    let helper = std::env::args()
        .nth(1)
        .is_some_and(|a| a == HELPER_SUBCOMMAND || a == PROBE_SUBCOMMAND);
    if !helper {
        // First, while this process has one thread and is still dumpable
        // (newuidmap maps only a process its caller owns in /proc): a user
        // with subordinate ids runs in a user namespace of its own.
        if let Err(e) = rbuild::userns::enter_own(rbuild::cache::default_root) {
            eprintln!(
                "error: {e} (set {}=0 to build without)",
                rbuild::userns::SUBIDS_ENV
            );
            std::process::exit(rbuild::cli::EXIT_ENVIRONMENT);
        }
        // Not dumpable: a RUN step that shares rbuild's uid (tiers without a
        // pid namespace) cannot ptrace rbuild or read its memory. The helpers
        // first write their own /proc/self id maps, which a non-dumpable
        // process no longer owns; the sandbox helper protects itself after.
        confine::protect_self();
    }
    std::process::exit(rbuild::cli::main());
}
