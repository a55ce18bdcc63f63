//! Prints the four CRDs as one multi-document YAML stream.
fn main() {
    print!("{}", tollgate_crds::crd_yaml::all_crds_yaml());
}
