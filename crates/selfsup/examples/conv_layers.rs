//! Each convolution shape of ResNet-18 (CIFAR stem) in isolation: GFLOP/s of our im2col + GEMM
//! kernels (forward, weight gradient, input gradient) against Burn flex's `conv2d` and its
//! default backward, on a batch of 2×N images; for 3×3 stride-1 shapes also the Winograd
//! F(2×2, 3×3) forward and input gradient, in effective GFLOP/s (direct-convolution FLOPs over
//! its time).
//!
//! `cargo run --release -p selfsup --example conv_layers -- [N] [width]`

use std::time::Instant;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use selfsup::kernels::conv2d::{ConvGeom, forward, grad_input, grad_weight};
use selfsup::kernels::winograd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let width: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let w = |c: usize| ((c as f64 * width).round() as usize).max(1);
    // (cin, cout, k, stride, side): the distinct convolutions of ResNet-18 with the CIFAR stem
    let shapes = [
        (3, w(64), 3, 1, 32),
        (w(64), w(64), 3, 1, 32),
        (w(64), w(128), 3, 2, 32),
        (w(64), w(128), 1, 2, 32),
        (w(128), w(128), 3, 1, 16),
        (w(128), w(256), 3, 2, 16),
        (w(256), w(256), 3, 1, 8),
        (w(256), w(512), 3, 2, 8),
        (w(512), w(512), 3, 1, 4),
    ];
    println!(
        "N = {n}, width {width}: GFLOP/s (ours fwd / dW / dx | flex fwd / fwd+bwd | winograd fwd / dW / dx, effective)"
    );
    let dev = Device::flex();
    let ad = Device::flex().autodiff();
    for (cin, cout, k, s, side) in shapes {
        let g = ConvGeom {
            n,
            c: cin,
            h: side,
            w: side,
            o: cout,
            kh: k,
            kw: k,
            stride: [s, s],
            pad: [k / 2, k / 2],
        };
        let (oh, ow) = g.out_hw();
        let flops = 2.0 * (n * cout * oh * ow * cin * k * k) as f64;
        let x: Vec<f32> = (0..g.x_len())
            .map(|i| ((i * 7919) % 101) as f32 / 101.0)
            .collect();
        let wt: Vec<f32> = (0..g.w_len())
            .map(|i| ((i * 31) % 17) as f32 / 17.0)
            .collect();
        let y = forward(&x, &wt, &g);
        let tf = best(3, || drop(std::hint::black_box(forward(&x, &wt, &g))));
        let tw = best(3, || drop(std::hint::black_box(grad_weight(&x, &y, &g))));
        let tx = best(3, || drop(std::hint::black_box(grad_input(&wt, &y, &g))));
        let wino = winograd::applies(&g).then(|| {
            let t = best(3, || {
                drop(std::hint::black_box(winograd::forward(&x, &wt, &g)))
            });
            let td = best(3, || {
                drop(std::hint::black_box(winograd::grad_input(&wt, &y, &g)))
            });
            let tw = best(3, || {
                drop(std::hint::black_box(winograd::grad_weight(&x, &y, &g)))
            });
            format!(
                "{:6.1} {:6.1} {:6.1}",
                flops / t / 1e9,
                flops / tw / 1e9,
                flops / td / 1e9
            )
        });
        // Burn flex
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .with_bias(false)
            .init(&ad);
        let xb = Tensor::<4>::random([n, cin, side, side], Distribution::Default, &dev);
        let tbf = best(3, || {
            let conv = conv.valid();
            drop(conv.forward(xb.clone()).into_data())
        });
        let xa =
            Tensor::<4>::random([n, cin, side, side], Distribution::Default, &ad).require_grad();
        let tbb = best(3, || {
            let g = conv.forward(xa.clone()).sum().backward();
            drop(conv.weight.grad(&g).map(|t| t.into_data()));
        });
        println!(
            "{cin:>4}→{cout:<4} k{k} s{s} {side:>2}²: {:6.1} {:6.1} {:6.1} | {:6.1} {:6.1} | {}",
            flops / tf / 1e9,
            flops / tw / 1e9,
            flops / tx / 1e9,
            flops / tbf / 1e9,
            3.0 * flops / tbb / 1e9,
            wino.unwrap_or_else(|| "–".into())
        );
    }
}
