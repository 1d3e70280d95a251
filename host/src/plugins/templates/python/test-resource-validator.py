from app import Validator


def test_patients_need_a_name_and_a_birth_date():
    complete = {"resourceType": "Patient", "name": [{"family": "Chalmers"}], "birthDate": "1974-12-25"}
    assert Validator().validate("Patient", complete) == []
    issues = Validator().validate("Patient", {"resourceType": "Patient"})
    assert [i.expression for i in issues] == ["Patient.name", "Patient.birthDate"]
    assert Validator().validate("Observation", {}) == []
