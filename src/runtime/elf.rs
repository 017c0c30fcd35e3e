//! The `DT_NEEDED` entries of an ELF64 little-endian shared library: which
//! versions of CUDA, cuBLAS and TensorRT an ONNX Runtime provider was built
//! against, read from the provider itself (a JetPack build links CUDA 12,
//! PyPI's onnxruntime-gpu 1.31 CUDA 13). Reads only the headers and the
//! dynamic section, never the whole (hundreds of MB) file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// Bounds that keep a damaged file from driving large reads.
const MAX_PROGRAM_HEADERS: u16 = 512;
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;
const MAX_NAME: usize = 4096;

fn read_at(file: &mut File, offset: u64, buffer: &mut [u8]) -> Option<()> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    file.read_exact(buffer).ok()
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The sonames `path` links (`DT_NEEDED`), in order; None when it is not a
/// readable ELF64 little-endian file with a dynamic section.
pub fn needed_libraries(path: &Path) -> Option<Vec<String>> {
    let mut file = File::open(path).ok()?;
    let mut header = [0u8; 64];
    read_at(&mut file, 0, &mut header)?;
    // \x7fELF, 64-bit, little-endian
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 32),
        u16_at(&header, 54),
        u16_at(&header, 56),
    );
    if phentsize < 56 || phnum > MAX_PROGRAM_HEADERS {
        return None;
    }
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    read_at(&mut file, phoff, &mut table)?;
    let headers: Vec<(u32, u64, u64, u64)> = table
        .chunks(usize::from(phentsize))
        .map(|h| (u32_at(h, 0), u64_at(h, 8), u64_at(h, 16), u64_at(h, 32)))
        .collect(); // (type, file offset, virtual address, file size)
    let &(_, dyn_offset, _, dyn_size) = headers.iter().find(|h| h.0 == PT_DYNAMIC)?;
    if dyn_size > MAX_DYNAMIC_BYTES {
        return None;
    }
    let mut dynamic = vec![0u8; dyn_size as usize];
    read_at(&mut file, dyn_offset, &mut dynamic)?;
    let mut needed_offsets = Vec::new();
    let mut strtab_address = None;
    for entry in dynamic.chunks_exact(16) {
        match u64_at(entry, 0) {
            DT_NULL => break,
            DT_NEEDED => needed_offsets.push(u64_at(entry, 8)),
            DT_STRTAB => strtab_address = Some(u64_at(entry, 8)),
            _ => {}
        }
    }
    let strtab_address = strtab_address?;
    let strtab_file_offset = headers
        .iter()
        .filter(|h| h.0 == PT_LOAD)
        .find(|&&(_, _, vaddr, filesz)| strtab_address >= vaddr && strtab_address < vaddr + filesz)
        .map(|&(_, offset, vaddr, _)| strtab_address - vaddr + offset)?;
    needed_offsets
        .into_iter()
        .map(|name_offset| {
            let mut name = vec![0u8; MAX_NAME];
            file.seek(SeekFrom::Start(strtab_file_offset + name_offset))
                .ok()?;
            let read = file.read(&mut name).ok()?;
            let end = name[..read].iter().position(|&b| b == 0)?;
            String::from_utf8(name[..end].to_vec()).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_itself_links_libc() {
        let me = std::env::current_exe().unwrap();
        let needed = needed_libraries(&me).expect("an ELF with a dynamic section");
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so.")),
            "{needed:?}"
        );
    }

    #[test]
    fn other_files_are_not_read_as_elf() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("lib.so");
        std::fs::write(
            &text,
            b"not an ELF file at all, but long enough to hold a header ......",
        )
        .unwrap();
        assert_eq!(needed_libraries(&text), None);
        assert_eq!(needed_libraries(&dir.path().join("missing.so")), None);
    }
}
