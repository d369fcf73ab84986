//! `selfsup`: pretrain an encoder by self-supervised learning, evaluate it, export it.

mod bench;
mod embed;
mod eval;
mod export;
mod generate;
mod pretrain;
mod reconstruct;
mod report;
mod report_html;
mod search;
mod views;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse. With glibc's allocator every activation above 32 MB
/// (one ResNet-18 feature map at batch 128) is a fresh `mmap`, whose page faults cost up to a
/// third of a training step (measured in BENCHMARKS.md).
/// In front of it, a cache of large freed blocks shared by all threads
/// ([`selfsup::block_cache`]): a step's activations are reused from it, whichever thread freed
/// them, so mimalloc can hand what it frees back at once ([`PURGE_DELAY_MS`]).
/// Counted, so that the metrics can give the live heap beside resident memory.
#[global_allocator]
static GLOBAL: selfsup::monitor::CountingAlloc<
    selfsup::block_cache::BlockCache<mimalloc::MiMalloc>,
> = selfsup::monitor::CountingAlloc(selfsup::block_cache::BlockCache::new(mimalloc::MiMalloc));

/// mimalloc's `purge_delay` option (its index in mimalloc 3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc hands a freed page back to the OS at once. Keeping freed pages for a second
/// instead (this was 1000 before the block cache) kept a step's activations resident for
/// reuse, but per thread: how much was held at an epoch's peak depended on which thread freed
/// what, and the epoch's peak resident memory moved by 10–35 % from one epoch to the next (MAE on
/// the digits 73–98 MB). The large blocks now stay in the block cache, so purging at once costs
/// no page faults where they were (moco-v2 on the digits 2118 images/s against 1832 with the
/// delay and no cache; purging at once without the cache: 1355) and the peak is level (61 MB
/// every epoch). `SELFSUP_PURGE_DELAY_MS` and `SELFSUP_BLOCK_CACHE_MB` (0: no cache) override.
const PURGE_DELAY_MS: std::os::raw::c_long = 0;

/// mimalloc's `allow_thp` option (its index in mimalloc 3's `mi_option_e`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// No transparent huge pages for this process (unless `SELFSUP_THP=1`). mimalloc asks the kernel
/// for huge pages on its arenas (`MADV_HUGEPAGE`), so resident memory moved in 2 MiB pages: a
/// purge of a freed 64 KiB inside one did not shrink it, and the kernel's khugepaged filled
/// partly used 2 MiB ranges back in. Resident memory at the end of an epoch crept up by 5–10 %
/// over 20 epochs with the live heap flat to the byte (moco-v2 45 → 55 MB); without huge pages
/// it stays level (35 MB every epoch) and is 20 MB lower (`scripts/memory-check.sh`, README).
fn no_huge_pages() {
    if std::env::var("SELFSUP_THP").is_ok_and(|v| v == "1") {
        return;
    }
    // SAFETY: sets one integer option of the allocator; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // SAFETY: a process attribute; no pointers are passed. Memory mapped before this call
    // (mimalloc's first arena) loses its huge pages too: the flag overrides MADV_HUGEPAGE.
    // A kernel without it (before 3.15) returns an error, which changes nothing.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// `SELFSUP_PURGE_DELAY_MS` overrides the delay (-1: never purge, 0: at once),
/// `SELFSUP_BLOCK_CACHE_MB` the most the block cache keeps (default 4096; 0: no cache).
fn keep_freed_pages() {
    let ms = std::env::var("SELFSUP_PURGE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<std::os::raw::c_long>().ok())
        .unwrap_or(PURGE_DELAY_MS);
    // SAFETY: sets one integer option of the allocator; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    if let Some(mb) = std::env::var("SELFSUP_BLOCK_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        GLOBAL.0.set_max_bytes(mb << 20);
    }
    if let Some(pct) = std::env::var("SELFSUP_BLOCK_CACHE_SLACK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        GLOBAL.0.set_slack_pct(pct);
    }
    selfsup::monitor::on_epoch_end(collect_free_pages);
}

/// At the end of each epoch, the block cache is emptied and a forced collection runs on every
/// thread that computes: frees what the
/// heaps of this thread, of the compute pool's threads and of finished threads (a loader thread
/// per epoch) hold unused. Resident memory at the end of an epoch fell to a half to a quarter
/// (gpt: 445 → 113 MB) and stays level over 20 epochs (`scripts/memory-check.sh`, 2026-11-30;
/// the README has the table). Each pool thread collects its own heap: collecting from this
/// thread alone left what the pool's threads had freed in the last second resident, and
/// resident memory at an epoch's end moved by 4 MB of 60 from one epoch to the next with it.
fn collect_free_pages() {
    GLOBAL.0.flush();
    // SAFETY: a collection of the calling thread's heap; valid at any time.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[derive(Parser)]
#[command(
    name = "selfsup",
    version,
    about = "Self-supervised pretraining of encoders for images, text, audio, graphs and \
             image-text pairs, with honest evaluation",
    long_about = "Self-supervised pretraining of encoders for images, text, audio, graphs and \
                  image-text pairs (SimCLR, MoCo, BYOL, DINO, MAE, BERT- and GPT-style, CPC, \
                  GraphCL, CLIP, ...), with honest evaluation: the frozen encoder beside \
                  baselines computed in the same run (raw pixels or hand-made features, a \
                  random-init encoder).\n\nQuick start: `selfsup pretrain` trains SimCLR on the \
                  built-in digits and prints the evaluation table."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain an encoder (default: SimCLR on the built-in digits), then evaluate it.
    Pretrain(pretrain::Args),
    /// Evaluate the encoder of a run: weighted kNN and/or linear probe, with baselines.
    Eval(eval::Args),
    /// Write the encoder's features of every image (text runs: every document; image–text runs:
    /// every image and caption in the shared space) to CSV or .npy.
    Embed(embed::Args),
    /// Compare evaluated runs in one table (accuracy, speed, memory, collapse monitors).
    Report(report::Args),
    /// Time the training step, augmentation, loader, kNN and linear probe (one table + JSON).
    Bench(bench::Args),
    /// Write a PNG grid of images beside their augmented views.
    Views(views::Args),
    /// Write a PNG grid of test images, their masked/noisy input and the reconstruction
    /// (MAE and DAE runs).
    Reconstruct(reconstruct::Args),
    /// Continue a prompt with a next-token (gpt) run's model.
    Generate(generate::Args),
    /// List the images of an image–text (clip) run nearest to a text, with a PNG strip.
    Search(search::Args),
    /// Write a run's ResNet encoder as a torchvision state dict (safetensors).
    Export(export::Args),
}

fn main() {
    no_huge_pages();
    keep_freed_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SELFSUP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = {
        use clap::{CommandFactory, FromArgMatches};
        // `pretrain --help` lists the registry's methods and the kinds of data from their tables
        let cmd = Cli::command().mut_subcommand("pretrain", |c| {
            c.mut_arg("method", |a| a.help(pretrain::method_help()))
                .mut_arg("data", |a| a.help(pretrain::data_help()))
        });
        Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
    };
    let result = match cli.command {
        Command::Pretrain(a) => pretrain::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Views(a) => views::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Report(a) => report::run(a),
        Command::Reconstruct(a) => reconstruct::run(a),
        Command::Search(a) => search::run(a),
        Command::Export(a) => export::run(a),
    };
    if let Some(times) = selfsup::kernels::ext::op_times() {
        let list: Vec<String> = times.iter().map(|(n, s)| format!("{n} {s:.3} s")).collect();
        eprintln!("time in our kernels: {}", list.join(", "));
    }
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
