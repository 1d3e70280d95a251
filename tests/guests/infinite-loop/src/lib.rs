//! Never returns: the host's deadline must stop it.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

struct InfiniteLoop;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Guest for InfiniteLoop {
    fn grant(_request: TokenRequest) -> Grant {
        spin()
    }

    fn authorize(_request: FhirRequest, _claims: Claims) -> Decision {
        spin()
    }
}

export!(InfiniteLoop);
