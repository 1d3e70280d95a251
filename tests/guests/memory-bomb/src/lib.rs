//! Allocates until memory runs out: the host's memory cap must stop it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

struct MemoryBomb;

fn explode() -> usize {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&chunks);
        if chunks.len() == usize::MAX {
            return chunks.len();
        }
    }
}

impl Guest for MemoryBomb {
    fn grant(_request: TokenRequest) -> Grant {
        Grant {
            granted: vec![explode().to_string()],
            refused: Vec::new(),
        }
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        Decision::Deny(format!("survived {}", explode()))
    }
}

export!(MemoryBomb);
