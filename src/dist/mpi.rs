//! [`Ranks`] over MPI (the `mpi` crate on the system's Open MPI), for runs under `mpirun`.
//!
//! MPI is initialised on the thread that runs the command (`Threading::Funneled`: rayon's
//! workers never call MPI) and finalised when [`Mpi`] is dropped. Bytes sent and received are
//! counted; `NODEC_MPI_TRAFFIC=1` makes rank 0 print the count at the end (`benches/mpi_scaling.sh`).

use std::cell::Cell;

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, Root};
use mpi::Threading;

use super::Ranks;

/// The world of an `mpirun` launch.
pub struct Mpi {
    world: SimpleCommunicator,
    /// Bytes rank 0 received from the other ranks in gathers, and bytes each other rank
    /// received in broadcasts: what crosses the network, framing included.
    gathered: Cell<u64>,
    broadcast: Cell<u64>,
    collectives: Cell<u64>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

/// Whether a launcher (Open MPI's `mpirun`, or a PMI/PMIx one such as `srun`) started this
/// process. Without one nodec does not touch MPI, so a build with the feature run by hand is the
/// default build.
pub fn launched() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

impl Mpi {
    /// Initialises MPI when a launcher started this process (see [`launched`]).
    pub fn init() -> Option<Mpi> {
        if !launched() {
            return None;
        }
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        Some(Mpi {
            world,
            gathered: Cell::new(0),
            broadcast: Cell::new(0),
            collectives: Cell::new(0),
            _universe: universe,
        })
    }

    /// `mpi: ...` for `NODEC_MPI_TRAFFIC=1`.
    pub fn traffic(&self) -> String {
        format!(
            "mpi: {} ranks, {} collectives, {} bytes gathered on rank 0 from the others, {} bytes broadcast to each\n",
            self.size(),
            self.collectives.get(),
            self.gathered.get(),
            self.broadcast.get()
        )
    }
}

impl Ranks for Mpi {
    fn rank(&self) -> usize {
        usize::try_from(self.world.rank()).unwrap_or(0)
    }

    fn size(&self) -> usize {
        usize::try_from(self.world.size()).unwrap_or(1)
    }

    fn gather(&self, local: &[u8]) -> Vec<Vec<u8>> {
        self.collectives.set(self.collectives.get() + 2);
        let root = self.world.process_at_rank(0);
        // An empty Vec's pointer is 1, which Open MPI reads as `MPI_IN_PLACE`: every buffer
        // starts with one byte, dropped on arrival.
        let mut framed = Vec::with_capacity(local.len() + 1);
        framed.push(0u8);
        framed.extend_from_slice(local);
        // MPI counts are `int`: a share of more than 2 GiB cannot be sent in one piece.
        let count = i32::try_from(framed.len()).expect("a rank's share is below 2 GiB");
        if !self.is_root() {
            root.gather_into(&count);
            root.gather_varcount_into(&framed[..]);
            return Vec::new();
        }
        let mut counts = vec![0i32; self.size()];
        root.gather_into_root(&count, &mut counts[..]);
        let mut displs = Vec::with_capacity(counts.len());
        let mut total = 0i32;
        for c in &counts {
            displs.push(total);
            total = total.checked_add(*c).expect("a gather is below 2 GiB");
        }
        let mut all = vec![0u8; total as usize];
        {
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(&framed[..], &mut partition);
        }
        let from_others = total - counts[0];
        self.gathered
            .set(self.gathered.get() + u64::from(from_others.unsigned_abs()));
        counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize + 1..(d + c) as usize].to_vec())
            .collect()
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) {
        self.collectives.set(self.collectives.get() + 2);
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        // See `gather`: an empty buffer's pointer would mean `MPI_IN_PLACE`.
        if len > 0 {
            root.broadcast_into(&mut bytes[..]);
        }
        self.broadcast.set(self.broadcast.get() + len);
    }
}
