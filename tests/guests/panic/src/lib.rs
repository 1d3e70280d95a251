//! Panics: a bug in a plugin, which the host must turn into a denial.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "scope-policy" });

struct Panic;

impl Guest for Panic {
    fn grant(request: TokenRequest) -> Grant {
        panic!("cannot grant {:?}", request.requested)
    }

    fn authorize(request: FhirRequest, _claims: Claims) -> Decision {
        panic!("cannot authorize {:?}", request.resource_type)
    }
}

export!(Panic);
