//! `fpush store …`: the operator's commands on the registration store.
