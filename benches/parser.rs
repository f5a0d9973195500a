//! Parser speed: a generated 10,000-instruction Dockerfile with line
//! continuations, heredocs, JSON forms and flags (issue target: < 20 ms).
//!
//! Run: `cargo bench --bench parser`.

use rbuild::parser;

fn main() {
    divan::main();
}

/// Builds a Dockerfile of `n` instructions mixing every common shape.
fn generate(n: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\n");
    let mut count = 1;
    let mut stage = 0;
    while count < n {
        s.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        stage += 1;
        count += 1;
        let body = [
            "RUN set -eux; \\\n    echo building \\\n    && mkdir -p /opt/app \\\n    && touch /opt/app/ready\n",
            "ENV A=1 B=\"two words\" C=three\\ parts\n",
            "COPY --chown=1000:1000 --chmod=0644 src/ /opt/app/src/\n",
            "RUN --mount=type=cache,target=/root/.cache,sharing=locked <<EOF\nset -e\necho hello from a heredoc\nexit 0\nEOF\n",
            "LABEL org.opencontainers.image.title=\"bench\" version=1\n",
            "CMD [\"/bin/sh\", \"-c\", \"echo done\"]\n",
            "WORKDIR /opt/app\n",
            "COPY <<-EOT /opt/app/config\n\tkey=value\n\tother=thing\n\tEOT\n",
            "HEALTHCHECK --interval=30s --timeout=3s CMD wget -q -O- http://localhost/ || exit 1\n",
            "EXPOSE 8080/tcp 8443\n",
        ];
        for line in body {
            if count >= n {
                break;
            }
            s.push_str(line);
            count += 1;
        }
    }
    s
}

#[divan::bench]
fn parse_10k_instructions(bencher: divan::Bencher) {
    let text = generate(10_000);
    bencher.bench(|| {
        let parsed = parser::parse(divan::black_box(&text), "Dockerfile").expect("valid");
        assert!(parsed.stages.len() > 900);
        parsed
    });
}

#[divan::bench]
fn parse_raw_10k_instructions(bencher: divan::Bencher) {
    let text = generate(10_000);
    bencher.bench(|| parser::parse_raw(divan::black_box(&text), "Dockerfile").expect("valid"));
}
