#if canImport(Glibc)
import Glibc
#endif

/// State guarded by a `pthread_mutex_t`.
///
/// Use this rather than `Synchronization.Mutex` for state that kernel threads share (pools,
/// caches): on Linux, `Mutex` synchronises through futex calls inside the uninstrumented standard
/// library, so ThreadSanitizer sees no happens-before edge and reports every guarded access as a
/// race, hiding real ones in the noise. TSan intercepts pthread mutexes (docs/Reliability.md).
public final class LockedState<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var state: State

    public init(_ state: State) {
        self.state = state
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the state.
    public func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}
