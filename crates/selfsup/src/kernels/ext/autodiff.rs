//! The extension on `Autodiff<B>`: the backward nodes of the nine differentiable operations
//! (batch norm, layer norm, softmax, max pool, GELU, linear, attention, cross-entropy,
//! convolution), each recording what its gradient needs (checkpointed inputs or saved
//! outputs), and the wiring that runs the forward on the inner backend `B` and registers the
//! node. The gradients themselves run on `B` (the `*_backward` operations of [`ConvBackend`]);
//! their entries here are unreachable.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, TensorMetadata};

use super::{AttnOut, BnGrads, BnTrain, CeOut, ConvBackend, LinearGrads, LnOut};
use crate::kernels::batch_norm::Epilogue;

#[derive(Debug)]
struct BatchNormBackward;

impl<B: ConvBackend> Backward<B, 3> for BatchNormBackward {
    /// Input and gamma (checkpointed), beta, mean, variance, epsilon, what was fused after.
    type State = (
        NodeId,
        NodeId,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
        Epilogue,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, beta, mean, var, eps, ep) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let gamma: FloatTensor<B> = ckpt.retrieve_node_output(gamma_id);
        let g = B::selfsup_batch_norm_backward(x, gamma, beta, mean, var, grad, eps, ep);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, g.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, g.beta);
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: ConvBackend> Backward<B, 3> for LayerNormBackward {
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, gamma_id, mean, rstd) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let gamma: FloatTensor<B> = ckpt.retrieve_node_output(gamma_id);
        let g = B::selfsup_layer_norm_backward(x, gamma, mean, rstd, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, g.gamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, g.beta);
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: ConvBackend> Backward<B, 1> for SoftmaxBackward {
    /// The output y.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::selfsup_softmax_backward(ops.state, grad));
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl<B: ConvBackend> Backward<B, 1> for MaxPoolBackward {
    /// The input's checkpoint, kernel, stride, padding.
    type State = (NodeId, [usize; 2], [usize; 2], [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, kernel, stride, padding) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        if let Some(node) = node_x {
            let dx = B::selfsup_max_pool2d_backward(x, grad, kernel, stride, padding);
            grads.register::<B>(node.id, dx);
        }
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: ConvBackend> Backward<B, 1> for GeluBackward {
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = ckpt.retrieve_node_output(ops.state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::selfsup_gelu_backward(x, grad));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: ConvBackend> Backward<B, 3> for LinearBackward {
    /// The nodes of `x` and of the weight.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, w_id) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let w: FloatTensor<B> = ckpt.retrieve_node_output(w_id);
        let g = B::selfsup_linear_backward(x, w, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, g.x);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, g.weight);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, g.bias);
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: ConvBackend> Backward<B, 1> for AttentionBackward {
    /// `qkv`'s node, the weights, heads, causal, sequence lengths.
    type State = (NodeId, FloatTensor<B>, usize, bool, Option<Vec<usize>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_qkv] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (qkv_id, probs, heads, causal, lens) = ops.state;
        if let Some(node) = node_qkv {
            let qkv: FloatTensor<B> = ckpt.retrieve_node_output(qkv_id);
            let g = B::selfsup_attention_backward(qkv, probs, grad, heads, causal, lens);
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: ConvBackend> Backward<B, 1> for CrossEntropyBackward {
    /// The softmax of the logits and the targets.
    type State = (FloatTensor<B>, Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _ckpt: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (probs, targets) = ops.state;
        if let Some(node) = node_x {
            let g = B::selfsup_cross_entropy_backward(probs, targets, grad);
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct Conv2dBackward;

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, [usize; 2], [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, w_id, stride, padding) = ops.state;
        let x: FloatTensor<B> = ckpt.retrieve_node_output(x_id);
        let w: FloatTensor<B> = ckpt.retrieve_node_output(w_id);
        let x_shape: [usize; 4] = x.shape().dims();
        let w_shape: [usize; 4] = w.shape().dims();
        if let Some(node) = node_x {
            let gx = B::selfsup_conv2d_grad_input(w, grad.clone(), x_shape, stride, padding);
            grads.register::<B>(node.id, gx);
        }
        if let Some(node) = node_w {
            let gw = B::selfsup_conv2d_grad_weight(x, grad, w_shape, stride, padding);
            grads.register::<B>(node.id, gw);
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn selfsup_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match Conv2dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let y = B::selfsup_conv2d(
                    x.primitive().clone(),
                    weight.primitive().clone(),
                    stride,
                    padding,
                );
                prep.finish((x_id, w_id, stride, padding), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }

    fn selfsup_conv2d_grad_input(
        _weight: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _x_shape: [usize; 4],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_conv2d_grad_weight(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _weight_shape: [usize; 4],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        epilogue: Epilogue,
    ) -> BnTrain<Self> {
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let beta = beta.into_primitive();
                let r = B::selfsup_batch_norm_train(
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    beta.clone(),
                    epsilon,
                    epilogue,
                );
                let state = (
                    x_id,
                    gamma_id,
                    beta,
                    r.mean.clone(),
                    r.var.clone(),
                    epsilon,
                    epilogue,
                );
                BnTrain {
                    output: prep.finish(state, r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    var: FloatTensor::<Self>::new(r.var),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_batch_norm_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                    epilogue,
                );
                BnTrain {
                    output: prep.finish(r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    var: FloatTensor::<Self>::new(r.var),
                }
            }
        }
    }

    fn selfsup_batch_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _var: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _epsilon: f64,
        _epilogue: Epilogue,
    ) -> BnGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> LnOut<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let r = B::selfsup_layer_norm(
                    x.primitive().clone(),
                    gamma.primitive().clone(),
                    beta.into_primitive(),
                    epsilon,
                );
                let state = (x_id, gamma_id, r.mean.clone(), r.rstd.clone());
                LnOut {
                    output: prep.finish(state, r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    rstd: FloatTensor::<Self>::new(r.rstd),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_layer_norm(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                LnOut {
                    output: prep.finish(r.output),
                    mean: FloatTensor::<Self>::new(r.mean),
                    rstd: FloatTensor::<Self>::new(r.rstd),
                }
            }
        }
    }

    fn selfsup_layer_norm_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _rstd: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> BnGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::selfsup_softmax(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_softmax(x.into_primitive())),
        }
    }

    fn selfsup_softmax_backward(
        _y: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = B::selfsup_gelu(x.primitive().clone());
                prep.finish(x_id, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_gelu(x.into_primitive())),
        }
    }

    fn selfsup_gelu_backward(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = B::selfsup_max_pool2d(x.primitive().clone(), kernel, stride, padding);
                prep.finish((x_id, kernel, stride, padding), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_max_pool2d(
                x.into_primitive(),
                kernel,
                stride,
                padding,
            )),
        }
    }

    fn selfsup_max_pool2d_backward(
        _x: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _kernel: [usize; 2],
        _stride: [usize; 2],
        _padding: [usize; 2],
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let y = B::selfsup_linear(
                    x.primitive().clone(),
                    weight.primitive().clone(),
                    bias.into_primitive(),
                );
                prep.finish((x_id, w_id), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::selfsup_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn selfsup_linear_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
    ) -> LinearGrads<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        causal: bool,
        lens: Option<Vec<usize>>,
    ) -> AttnOut<Self> {
        match AttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let qkv_id = prep.checkpoint(&qkv);
                let r = B::selfsup_attention(qkv.primitive().clone(), heads, causal, lens.clone());
                let state = (qkv_id, r.probs.clone(), heads, causal, lens);
                AttnOut {
                    output: prep.finish(state, r.output),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_attention(qkv.into_primitive(), heads, causal, lens);
                AttnOut {
                    output: prep.finish(r.output),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
        }
    }

    fn selfsup_attention_backward(
        _qkv: FloatTensor<Self>,
        _probs: FloatTensor<Self>,
        _grad_out: FloatTensor<Self>,
        _heads: usize,
        _causal: bool,
        _lens: Option<Vec<usize>>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }

    fn selfsup_cross_entropy(logits: FloatTensor<Self>, targets: Vec<u32>) -> CeOut<Self> {
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let r = B::selfsup_cross_entropy(logits.into_primitive(), targets.clone());
                CeOut {
                    loss: prep.finish((r.probs.clone(), targets), r.loss),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
            OpsKind::UnTracked(prep) => {
                let r = B::selfsup_cross_entropy(logits.into_primitive(), targets);
                CeOut {
                    loss: prep.finish(r.loss),
                    probs: FloatTensor::<Self>::new(r.probs),
                }
            }
        }
    }

    fn selfsup_cross_entropy_backward(
        _probs: FloatTensor<Self>,
        _targets: Vec<u32>,
        _grad_out: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("gradients are computed on the inner backend")
    }
}
