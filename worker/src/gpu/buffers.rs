//! GPU buffers: weights in their GPU block layout, activations, uniforms, and readback.
//!
//! Weights keep their storage type on the GPU. Blocks must start on a u32 word (WGSL reads
//! storage as `array<u32>`): Q4_1 (20 B), Q3 (16 B) and Q2 (12 B) blocks already do and are
//! uploaded as stored; GGUF's Q8_0 (34 B) and Q4_0 (18 B) are not, so each block gets two
//! bytes of padding after its f16 scale (36 B and 20 B: 6% and 11% more bytes, in exchange for
//! one aligned word per read instead of byte shuffling across word boundaries). The layouts are
//! listed in `shaders/weights.wgsl`.

use super::GpuContext;
use crate::quant::StorageType;
use crate::tensor::WeightMatrix;
use crate::WorkerError;

/// The bytes of `stored` (a whole matrix in `ty`) in the GPU layout, padded to whole words.
pub fn gpu_layout(ty: StorageType, stored: &[u8]) -> Vec<u8> {
    let mut out = match ty {
        StorageType::Q8_0 | StorageType::Q4_0 => {
            let block = ty.geometry().1;
            let mut out = Vec::with_capacity(stored.len() / block * (block + 2));
            for b in stored.chunks_exact(block) {
                out.extend_from_slice(&b[..2]);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&b[2..]);
            }
            out
        }
        _ => stored.to_vec(),
    };
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// `GpuLimitError` when `bytes` do not fit one storage binding (`max`, the adapter's
/// `maxStorageBufferBindingSize`) or one buffer (`max_buffer`).
pub fn check_binding(tensor: &str, bytes: u64, max: u64, max_buffer: u64) -> Result<(), WorkerError> {
    if bytes > max_buffer {
        return Err(WorkerError::GpuLimit { tensor: tensor.to_owned(), bytes, limit: "maxBufferSize", max: max_buffer });
    }
    if bytes > max {
        return Err(WorkerError::GpuLimit { tensor: tensor.to_owned(), bytes, limit: "maxStorageBufferBindingSize", max });
    }
    Ok(())
}

/// Uploads a weight matrix in its GPU layout (refused by name if it exceeds a binding).
pub fn upload_weights(ctx: &GpuContext, m: &WeightMatrix) -> Result<wgpu::Buffer, WorkerError> {
    let bytes = gpu_layout(m.ty, m.stored_bytes());
    check_binding(&m.name, bytes.len() as u64, ctx.limits.max_storage_buffer_binding_size, ctx.limits.max_buffer_size)?;
    Ok(init(ctx, &m.name, &bytes, wgpu::BufferUsages::STORAGE))
}

/// A buffer holding `bytes` (at least 4 bytes: zero-sized bindings are invalid). Created
/// empty and filled through the queue — `create_buffer_init` panics on a lost device, this
/// reports the loss at the next check instead.
pub fn init(ctx: &GpuContext, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let size = (bytes.len().next_multiple_of(4).max(4)) as u64;
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage: usage | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false });
    let whole = bytes.len() - bytes.len() % 4;
    if whole > 0 {
        ctx.queue.write_buffer(&buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        ctx.queue.write_buffer(&buffer, whole as u64, &tail);
    }
    buffer
}

/// f32 values as a storage buffer.
pub fn storage_f32(ctx: &GpuContext, label: &str, values: &[f32]) -> wgpu::Buffer {
    init(ctx, label, &f32_bytes(values), wgpu::BufferUsages::STORAGE)
}

/// A zeroed storage buffer of `len` f32s, checked against the binding limit.
pub fn scratch(ctx: &GpuContext, label: &str, len: usize) -> Result<wgpu::Buffer, WorkerError> {
    let bytes = (len.max(1) * 4) as u64;
    check_binding(label, bytes, ctx.limits.max_storage_buffer_binding_size, ctx.limits.max_buffer_size)?;
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    }))
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A MAP_READ staging buffer of `bytes`.
pub fn staging(ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes.next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Maps `staging` (already filled by a submitted copy) and returns its first `bytes` bytes.
/// Awaits the GPU (natively by polling the device); a lost device or a captured validation
/// error is returned instead of the (meaningless) contents.
pub async fn read_staging(ctx: &GpuContext, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, WorkerError> {
    let slice = staging.slice(..bytes);
    let (tx, rx) = crate::futures::oneshot();
    slice.map_async(wgpu::MapMode::Read, move |result| tx.send(result));
    ctx.poll()?;
    let mapped = rx.await;
    ctx.check()?;
    match mapped {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(WorkerError::GpuDeviceLost { reason: format!("readback failed: {e}") }),
        None => return Err(WorkerError::GpuDeviceLost { reason: "readback never completed".into() }),
    }
    let data = slice.get_mapped_range().map_err(|e| WorkerError::GpuValidation { message: format!("readback mapping: {e}") })?.to_vec();
    staging.unmap();
    Ok(data)
}

/// Copies `len` f32s from `buffer` back to the CPU (tests, logits).
pub async fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, WorkerError> {
    let bytes = (len * 4) as u64;
    let stage = staging(ctx, bytes);
    let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read_f32") });
    encoder.copy_buffer_to_buffer(buffer, 0, &stage, 0, bytes);
    ctx.queue.submit([encoder.finish()]);
    let data = read_staging(ctx, &stage, bytes).await?;
    Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_blocks_get_padding_after_the_scale() {
        let q8: Vec<u8> = (0..68).map(|i| i as u8).collect();
        let out = gpu_layout(StorageType::Q8_0, &q8);
        assert_eq!(out.len(), 72);
        assert_eq!(&out[..6], &[0, 1, 0, 0, 2, 3]);
        assert_eq!(&out[36..40], &[34, 35, 0, 0]);
        let q41 = vec![7u8; 40];
        assert_eq!(gpu_layout(StorageType::Q4_1, &q41), q41, "Q4_1 blocks are already word-aligned");
        assert_eq!(gpu_layout(StorageType::F16, &[1, 2, 3, 4, 5, 6]).len(), 8);
    }

    #[test]
    fn a_tensor_over_the_binding_limit_is_named() {
        let err = check_binding("token_embd.weight", 200 << 20, 128 << 20, 1 << 30).unwrap_err();
        assert_eq!(err.name(), "GpuLimitError");
        let text = err.to_string();
        assert!(text.contains("maxStorageBufferBindingSize") && text.contains("token_embd.weight") && text.contains(&(128u64 << 20).to_string()), "{text}");
        assert!(check_binding("x", 100, 128, 128).is_ok());
        assert!(check_binding("x", 200, 256, 128).unwrap_err().to_string().contains("maxBufferSize"));
    }
}
