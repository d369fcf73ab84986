//! Picking the compute device at run time (`--device cpu|vulkan|cuda`).

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// Which device a run uses. `cpu` (Burn's `flex` backend) is always available; `vulkan` and
/// `cuda` need the binary built with the cargo feature of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Vulkan,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "vulkan" => Ok(Self::Vulkan),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device '{other}': expected one of cpu, vulkan, cuda"
            )),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
        })
    }
}

impl DeviceChoice {
    /// The plain (inference) device, or an error saying which cargo feature is missing.
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "vulkan"))]
            Self::Vulkan => anyhow::bail!(
                "--device vulkan: this binary was built without GPU support; rebuild with \
                 `cargo build --release --features vulkan`"
            ),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => anyhow::bail!(
                "--device cuda: this binary was built without CUDA support; rebuild with \
                 `cargo build --release --features cuda`"
            ),
        }
    }

    /// The same device with autodiff enabled, for training.
    pub fn train_device(self) -> anyhow::Result<Device> {
        Ok(self.device()?.autodiff())
    }
}
